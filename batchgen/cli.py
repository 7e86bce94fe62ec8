"""Command line: argument parsing, progress display and exit codes; no business logic."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import anyio

from batchgen import __version__

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line and exit code 2, as every other user mistake does."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchgen", description="Resumable batch image generation on Segmind's v2 API.")
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume) a manifest", description="Run or resume a manifest.")
    run.add_argument("manifest", type=Path, help="YAML manifest of prompts")
    run.add_argument("--out", type=Path, help="output folder (default: the manifest's output, else out/<name>)")
    run.add_argument("--sandbox", action="store_true", help="run against the built-in emulator (no key, no cost)")
    run.add_argument("--base-url", help="Segmind-compatible server (default https://api.segmind.com)")
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
    run.add_argument("--retention", type=float, default=3600.0, help=argparse.SUPPRESS)
    run.add_argument("--dry-run", action="store_true", help="validate and print the plan; submit nothing")
    run.add_argument("--no-progress", action="store_true", help="plain periodic progress lines instead of a live line")

    st = sub.add_parser("status", help="summarize an output folder", description="Summarize an output folder.")
    st.add_argument("out_dir", type=Path)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    lg = sub.add_parser("ledger", help="ledger maintenance")
    lsub = lg.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)
    rp = lsub.add_parser("repair", help="move unreadable ledger lines aside and keep the rest")
    rp.add_argument("out_dir", type=Path)

    sp = sub.add_parser("sandbox", help="serve the offline Segmind emulator")
    from batchgen.sandbox.cli import add_sandbox_arguments

    add_sandbox_arguments(sp)
    return parser


def _err(message: str) -> None:
    sys.stderr.write(f"batchgen: {message}\n")
    sys.stderr.flush()


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def cmd_run(args: argparse.Namespace) -> int:
    from batchgen.progress import Progress
    from batchgen.runner import RunOptions, UserError, dry_run, execute

    opts = RunOptions(
        manifest=args.manifest,
        out=args.out,
        sandbox=args.sandbox,
        base_url=args.base_url,
        concurrency=args.concurrency,
        rpm=args.rpm,
        rpm_scope=args.rpm_scope,
        max_images=args.max_images,
        max_cost=args.max_cost,
        price=args.price,
        dry_run=args.dry_run,
        spend_available=args.spend_available,
        retention=args.retention,
    )
    try:
        if args.dry_run:
            return anyio.run(dry_run, opts, _say)
        progress = Progress(sys.stderr, live=False if args.no_progress else None)

        async def main() -> object:
            async with anyio.create_task_group() as tg:
                tg.start_soon(progress.loop)
                try:
                    return await execute(opts, _say, on_start=progress.attach)
                except UserError as e:
                    return e  # raised inside a task group: hand it out unwrapped
                finally:
                    tg.cancel_scope.cancel()

        outcome = anyio.run(main)
        progress.clear()
        if isinstance(outcome, UserError):
            raise outcome
    except UserError as e:
        _err(str(e))
        return e.code
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to resume")
        return EXIT_INTERRUPTED
    _summary(outcome)
    return outcome.exit_code  # type: ignore[attr-defined]


def _summary(outcome: object) -> None:
    c = outcome.counts  # type: ignore[attr-defined]
    parts = [
        f"{c['downloaded']}/{c['items']} downloaded",
        f"{c['failed'] + c['failed_retryable']} failed",
    ]
    if c["pending"] or c["in_flight"]:
        parts.append(f"{c['pending'] + c['in_flight']} left for the next run")
    parts.append(f"spend ${outcome.spent_usd:.2f}")  # type: ignore[attr-defined]
    extra = []
    if c["uncertain_resubmits"]:
        extra.append(f"{c['uncertain_resubmits']} uncertain submit(s) from an earlier crash sent again")
    if c["possible_double_charges"]:
        extra.append(f"{c['possible_double_charges']} submit(s) retried after a lost answer (may be billed twice)")
    if c["expired_resubmits"]:
        extra.append(f"{c['expired_resubmits']} expired unread and submitted again")
    if c["rate_limited"]:
        extra.append(f"{c['rate_limited']} rate-limit answers")
    _say("batchgen: " + ", ".join(parts) + (" — " + "; ".join(extra) if extra else ""))
    reason = outcome.reason  # type: ignore[attr-defined]
    if reason:
        _err(f"stopped: {reason}")


def cmd_status(args: argparse.Namespace) -> int:
    from batchgen.ledger import LedgerCorrupt
    from batchgen.status import format_summary, summarize

    try:
        s = summarize(args.out_dir)
    except (FileNotFoundError, LedgerCorrupt) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    if args.json:
        _say(json.dumps(s, indent=2))
    else:
        _say(format_summary(s))
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from batchgen.ledger import repair

    path = args.out_dir / "ledger.jsonl"
    if not path.exists():
        _err(f"{path}: no ledger here")
        return EXIT_BAD_INPUT
    moved, aside = repair(path)
    if moved:
        _say(f"moved {moved} unreadable line(s) to {aside}; kept the rest")
    else:
        _say(f"{path}: every line is readable; nothing to repair")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "ledger":
            return cmd_ledger(args)
        if args.command == "sandbox":
            from batchgen.sandbox.cli import serve_from_args

            return serve_from_args(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("BATCHGEN_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {e} (set BATCHGEN_DEBUG=1 for details)")
        return EXIT_INTERNAL
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
