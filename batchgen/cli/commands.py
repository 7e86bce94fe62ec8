"""Command line: argument parsing, progress display and exit codes; no business logic."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from batchgen import __version__
from batchgen.cli.run import cmd_plan, cmd_run
from batchgen.cli.streams import err, say, stdout_gone
from batchgen.core.errors import BatchgenError, ExitCode
from batchgen.store.shards import BUCKETS_ABOVE, ImageLayout

if TYPE_CHECKING:
    pass

EXIT_BAD_INPUT = ExitCode.BAD_INPUT


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line and exit code 2, as every other user mistake does."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _base_url(text: str) -> str:
    from batchgen.app.settings import check_base_url

    try:
        return check_base_url(text, flag="")
    except BatchgenError as e:
        raise argparse.ArgumentTypeError(str(e).lstrip()) from None


def output(text: str) -> Any:
    """``--out`` and OUT_DIR: a folder (a path or ``file://``) or an object store (``s3://bucket/prefix``)."""
    from batchgen.store.location import parse_output

    try:
        return parse_output(text)
    except BatchgenError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cache_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="object-store outputs: the local folder for the ledger's write-ahead file and images being "
                        "verified (default $XDG_CACHE_HOME/batchgen, else ~/.cache/batchgen)")


def _shard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard-count", type=int, metavar="N",
                   help="split the manifest into N shards by a hash of each id; this process runs one of them")
    p.add_argument("--shard-index", type=int, metavar="I",
                   help="the shard to run, 0 to N-1 (default: JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser. With ``argv`` (the command line it will parse), the emulator's flags
    are added only when that line names ``sandbox``: they import the emulator (aiohttp's server
    side), which a run or a resume never needs."""
    parser = _Parser(prog="batchgen", description="Resumable batch image generation on Segmind's v2 API.")
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume) a manifest", description="Run or resume a manifest.")
    run.add_argument("manifest", type=Path, help="YAML manifest of prompts")
    run.add_argument("--out", type=output, help="output folder or s3://bucket/prefix (default: the manifest's "
                     "output, else out/<name>)")
    run.add_argument("--sandbox", action="store_true", help="run against the built-in emulator (no key, no cost)")
    run.add_argument("--base-url", type=_base_url,
                     help="Segmind-compatible server, scheme and host only (default https://api.segmind.com)")
    run.add_argument("--history-url", type=_base_url,
                     help="host of the account's request history (default https://api.spotprod.segmind.com; "
                          "the --base-url server when that is given)")
    run.add_argument("--concurrency", type=int, help="max items submitted but not yet downloaded (default 16)")
    run.add_argument("--rpm", type=float, help="requests per minute allowed by your plan (Free 5, Pro 50)")
    run.add_argument(
        "--rpm-scope",
        choices=("all", "submit"),
        default="all",
        help="which requests count against --rpm: every keyed request (default) or submits only",
    )
    run.add_argument("--max-images", type=int, help="never submit more than N images for this output folder")
    run.add_argument("--max-cost", type=float, metavar="USD", help="never spend more than USD for this output folder")
    run.add_argument("--price", type=float, metavar="USD", help="price per image for estimates (default: the model's)")
    run.add_argument("--spend-available", action="store_true", help="start even if the balance cannot pay for everything")
    run.add_argument("--retry-failed", action="store_true", help="submit items that failed for good again (content "
                     "filter, FAILED generation, a rejected value); only a generation that completes is billed")
    run.add_argument("--retention", type=float, default=3600.0, help=argparse.SUPPRESS)
    run.add_argument("--unreachable-after", type=float, default=60.0, help=argparse.SUPPRESS)
    run.add_argument("--history-wait", type=float, help=argparse.SUPPRESS)  # RecoveryPolicy.landing_wait_s
    run.add_argument("--dry-run", action="store_true", help="validate and print the plan; submit nothing")
    run.add_argument("--no-progress", action="store_true", help="plain periodic progress lines instead of a live line")
    run.add_argument("--summary-json", type=Path, metavar="PATH", help="write a JSON summary of the run (counts, spend, failures by reason, exit code)")
    run.add_argument("--log-format", choices=("text", "json"), default="text", help="json: one JSON object per line on stderr for log collectors")
    _shard_arguments(run)
    _cache_argument(run)
    run.add_argument("--lease-ttl", type=float, default=60.0, metavar="SECONDS",
                     help="object-store outputs: how long the run's lease lasts unrenewed, i.e. how long a killed "
                          "run keeps the next one out (default 60)")
    run.add_argument("--upload-interval", type=float, default=2.0, metavar="SECONDS",
                     help="object-store outputs: seconds between uploads of the ledger's new lines (default 2)")
    run.add_argument("--rpm-per-shard", action="store_true",
                     help="--rpm (or the manifest's rpm) is each shard's own limit (a key per shard); "
                          "by default it is the key's total, split between the shards")
    run.add_argument("--image-layout", choices=[m.value for m in ImageLayout], default=ImageLayout.AUTO.value,
                     help=f"where new images go: flat images/<id>.<ext>, or buckets images/<2 hex>/<id>.<ext>; "
                          f"auto (default): buckets when the manifest has more than {BUCKETS_ABOVE:,} items")

    pl = sub.add_parser("plan", help="show a manifest's expansion, what is done and the estimated spend",
                        description="Validate a manifest and show its plan; sends nothing.")
    pl.add_argument("manifest", type=Path)
    pl.add_argument("--out", type=output, help="output folder or s3://bucket/prefix (default: the manifest's output, "
                    "else out/<name>)")
    _cache_argument(pl)
    pl.add_argument("--price", type=float, metavar="USD", help="price per image for the estimate")
    pl.add_argument("--max-images", type=int, help="budget in images, as for run")
    pl.add_argument("--max-cost", type=float, metavar="USD", help="budget in USD, as for run")
    pl.add_argument("--retry-failed", action="store_true", help="count items that failed for good as to submit")
    pl.add_argument("--base-url", type=_base_url,
                    help="where to read the balance when SEGMIND_API_KEY is set (default https://api.segmind.com)")
    _shard_arguments(pl)

    formats: tuple[str, ...] | None = None  # the exporters' module is imported for an export alone
    if argv is None or _command_of(argv) == "export":
        from batchgen.outputs.export import FORMATS as formats

    ex = sub.add_parser("export", help="export an output folder for training pipelines",
                        description="Export downloaded images with their parameters and ledger facts.")
    ex.add_argument("out_dir", type=output)
    _cache_argument(ex)
    ex.add_argument("--format", required=True, choices=formats)
    # A str, not a Path: a trailing slash says "folder" for parquet, and Path would drop it.
    ex.add_argument("--to", required=True, metavar="DEST",
                    help="folder for imagefolder and webdataset; for parquet a file if DEST ends in .parquet, "
                         "else a folder (created if needed) holding DEST/metadata.parquet; a trailing / always "
                         "means a folder")
    ex.add_argument("--shard-size", type=int, default=1000, help="webdataset: samples per tar shard (default 1000)")
    ex.add_argument("--with-images", action="store_true",
                    help="parquet only: add the image bytes as an 'image' column (refused for the other formats, "
                         "which store every image as a file)")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export at DEST")

    rpt = sub.add_parser("report", help="write a self-contained HTML report of an output folder",
                         description="Write one HTML file: contact sheet, failures, spend, latency, timeline.")
    rpt.add_argument("out_dir", type=output)
    _cache_argument(rpt)
    rpt.add_argument("--to", type=Path, metavar="FILE", help="where to write it (default OUT_DIR/report.html)")

    st = sub.add_parser("status", help="summarize an output folder",
                        description="Summarize an output folder (every shard's ledger in it).")
    st.add_argument("out_dir", type=output)
    _cache_argument(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    rc = sub.add_parser("reconcile", help="compare a folder's ledger with what the account was billed",
                        description="Compare the ledger with the account's request history; exit 1 on differences.")
    rc.add_argument("out_dir", type=output)
    _cache_argument(rc)
    rc.add_argument("--json", action="store_true", help="machine-readable output")
    rc.add_argument("--adopt", action="store_true", help="record billed requests the ledger lacks, for the next run")
    rc.add_argument("--base-url", type=_base_url, help="Segmind-compatible server, as for run")
    rc.add_argument("--history-url", type=_base_url, help="host of the request history, as for run")

    lg = sub.add_parser("ledger", help="ledger maintenance")
    lsub = lg.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)
    rp = lsub.add_parser("repair", help="move unreadable ledger lines aside and keep the rest (every shard's ledger)")
    rp.add_argument("out_dir", type=output)
    _cache_argument(rp)

    md = sub.add_parser("models", help="list the known models, or one model's parameters and values",
                        description="List the known models; with a SLUG, its parameters, values, price and latency.")
    md.add_argument("slug", nargs="?", metavar="SLUG", help="a model, e.g. ideogram-txt-2-img")

    sp = sub.add_parser("sandbox", help="serve the offline Segmind emulator")
    if argv is None or _command_of(argv) == "sandbox":
        from batchgen.sandbox.cli import add_sandbox_arguments

        add_sandbox_arguments(sp)

    for sp_, func in ((run, cmd_run), (pl, cmd_plan), (ex, cmd_export), (rpt, cmd_report), (st, cmd_status),
                      (rc, cmd_reconcile), (rp, cmd_ledger), (md, cmd_models), (sp, cmd_sandbox)):
        sp_.set_defaults(func=func)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The command a command line names: its first word that is not an option (the top level's
    only option, ``--version``, takes no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _view(args: argparse.Namespace) -> Any:
    from batchgen.app.output import open_view

    return open_view(args.out_dir, args.cache_dir)


def _catalog(args: argparse.Namespace) -> Any:
    from batchgen.outputs.catalog import load_catalog

    view = _view(args)
    try:
        return load_catalog(view.folder, view.files), view
    except FileNotFoundError as e:
        raise BatchgenError(str(e).replace(str(view.folder), view.where)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from batchgen.outputs.export import export

    cat, _ = _catalog(args)
    try:
        n, where = export(cat, args.format, args.to, shard_size=args.shard_size,
                          with_images=args.with_images, overwrite=args.overwrite)
    except OSError as e:
        err(f"{args.to}: cannot write the export: {e.strerror or e}")
        return EXIT_BAD_INPUT
    say(f"exported {n} images as {args.format}: {where}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from batchgen.app.output import store_text
    from batchgen.outputs.report import render_report
    from batchgen.store.files import atomic_write_text

    cat, view = _catalog(args)
    html = render_report(cat, title=None if isinstance(args.out_dir, Path) else view.where)
    if args.to is None and not isinstance(args.out_dir, Path):
        say(f"report written: {store_text(view.storage, 'report.html', html)}")  # beside the output's images
        return 0
    dest = args.to or args.out_dir / "report.html"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, html)
    except OSError as e:
        err(f"{dest}: cannot write the report: {e.strerror or e}")
        return EXIT_BAD_INPUT
    say(f"report written: {dest}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from batchgen.outputs.status import format_summary, summarize

    view = _view(args)
    try:
        s = summarize(view.folder, files=view.files, holder=view.holder)
    except FileNotFoundError as e:
        raise BatchgenError(str(e).replace(str(view.folder), view.where)) from None
    s["out_dir"] = view.where
    if args.json:
        say(json.dumps(s, indent=2))
    else:
        say(format_summary(s))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from batchgen.app.reconcile import main as reconcile

    return reconcile(args.out_dir, as_json=args.json, adopt_found=args.adopt, base_url=args.base_url,
                     history_url=args.history_url, say=say, cache_dir=args.cache_dir)


def cmd_ledger(args: argparse.Namespace) -> int:
    from batchgen.app.output import repair_output

    return repair_output(args.out_dir, args.cache_dir, say, err)


def cmd_models(args: argparse.Namespace) -> int:
    from batchgen.cli.modelinfo import describe_model, list_models

    say("\n".join(describe_model(args.slug) if args.slug else list_models()))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from batchgen.sandbox.cli import serve_from_args

    return serve_from_args(args)


def leave_lightly() -> None:
    """The process is about to exit (``main`` reading the process's own command line): a run's
    items and ledger state, still held in a reference cycle through the run's finished task frames,
    go to the collector's permanent generation, so the interpreter's final collection does not walk
    and free them one by one (0.15-0.2 s after a 100,000-item resume). Everything was written,
    flushed, synced and closed by the command; the normal exit still flushes stdout and stderr and
    runs the exit handlers, and the exit code is the command's."""
    import gc

    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    """Parse, run the command, and map every ending to its documented exit code (the one place)."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    try:
        code = int(args.func(args))
        if argv is None:
            leave_lightly()
        return code
    except BatchgenError as e:
        err(str(e))
        return e.code
    except KeyboardInterrupt:
        err("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        stdout_gone()
        return ExitCode.OK
    except IsADirectoryError as e:
        err(f"{e.filename}: a folder where a file belongs")
        return ExitCode.BAD_INPUT
    except Exception as e:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("BATCHGEN_DEBUG"):
            raise
        err(f"internal error: {type(e).__name__}: {e} (set BATCHGEN_DEBUG=1 for details)")
        return ExitCode.INTERNAL


if __name__ == "__main__":
    sys.exit(main())
