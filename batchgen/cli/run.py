"""``batchgen run`` and ``batchgen plan``: options in, one run (or its plan), the summary out.

The command decides how the process ends (the engine never does): the exit code of the outcome, or
at once with 130 on a second signal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from batchgen.cli import streams
from batchgen.cli.streams import err, say
from batchgen.core.errors import BatchgenError, ExitCode

if TYPE_CHECKING:
    from batchgen.engine.context import RunOutcome

__all__ = ["cmd_plan", "cmd_run", "loop_options"]


def loop_options() -> dict[str, Any]:
    """``anyio.run`` options: uvloop when installed (about a fifth less CPU per request), else asyncio."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {"backend": "asyncio"}
    return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}


def cmd_run(args: argparse.Namespace) -> int:
    import time

    log = None
    say, err = streams.say, streams.err
    if args.log_format == "json":
        from batchgen.cli.logfmt import JsonLog

        log = JsonLog(sys.stderr)
        say, err = log.say, log.error
    started = time.time()
    result: dict[str, object] = {}
    code = _cmd_run(args, say, err, log, result)
    if args.summary_json is not None:
        from batchgen.outputs.summary import build_summary, write_summary

        out = result.get("out_dir")
        summary = build_summary(
            exit_code=code,
            manifest=args.manifest,
            out_dir=out,
            ledgers=None if out is None or isinstance(out, Path) else _ledger_copy(out, args.cache_dir),
            started=started,
            finished=time.time(),
            outcome=result.get("outcome"),
            error=result.get("error"),  # type: ignore[arg-type]
        )
        try:
            write_summary(args.summary_json, summary)
        except OSError as e:
            err(f"{args.summary_json}: cannot write the summary: {e.strerror or e}")
    return code


def _ledger_copy(out: object, cache_dir: Path | None) -> Path | None:
    """The local copy of an object store's ledgers, brought up to date for the summary (None if the
    store cannot be read now: the summary then has this run's counts only)."""
    from batchgen.app.output import open_view

    try:
        return open_view(out, cache_dir).folder  # type: ignore[arg-type]
    except BatchgenError:
        return None


def _out_dir_of(args: argparse.Namespace) -> object:
    if args.out is not None:
        return args.out
    from batchgen.app.output import manifest_output
    from batchgen.manifest import ManifestError, load_manifest

    try:
        return manifest_output(load_manifest(args.manifest).output)
    except (ManifestError, BatchgenError):
        return None


def _cmd_run(args: argparse.Namespace, say, err, log, result: dict[str, object]) -> int:  # type: ignore[no-untyped-def]
    from batchgen.app.runner import RunOptions, dry_run, execute
    from batchgen.cli.progress import Progress, ProgressDisplay

    if args.summary_json is not None:
        result["out_dir"] = _out_dir_of(args)
    if args.sandbox and (args.base_url or args.history_url):
        err(f"--sandbox and {'--base-url' if args.base_url else '--history-url'} both name the service to use; "
            "give one of them")
        return ExitCode.BAD_INPUT
    opts = RunOptions(
        manifest=args.manifest,
        out=args.out,
        sandbox=args.sandbox,
        base_url=args.base_url,
        history_url=args.history_url,
        concurrency=args.concurrency,
        rpm=args.rpm,
        rpm_scope=args.rpm_scope,
        max_images=args.max_images,
        max_cost=args.max_cost,
        price=args.price,
        dry_run=args.dry_run,
        spend_available=args.spend_available,
        retention=args.retention, retry_failed=args.retry_failed,
        unreachable_after=args.unreachable_after,
        history_wait=args.history_wait,
        shard_index=args.shard_index, shard_count=args.shard_count, rpm_per_shard=args.rpm_per_shard,
        image_layout=args.image_layout,
        cache_dir=args.cache_dir, lease_ttl=args.lease_ttl, upload_interval=args.upload_interval,
    )
    try:
        if args.dry_run:
            return anyio.run(dry_run, opts, say)
        progress: ProgressDisplay
        if log is not None:
            from batchgen.cli.logfmt import JsonProgress

            progress = JsonProgress(log)
        else:
            progress = Progress(sys.stderr, live=False if args.no_progress else None)

        async def main() -> RunOutcome | BatchgenError:
            async with anyio.create_task_group() as tg:
                tg.start_soon(progress.loop)
                try:
                    ending: RunOutcome | BatchgenError = await execute(
                        opts, say, on_start=progress.attach, on_second_signal=_leave_at_once
                    )
                except BatchgenError as e:
                    ending = e  # raised inside a task group: hand it out unwrapped
                finally:
                    tg.cancel_scope.cancel()
            return ending

        outcome = anyio.run(main, **loop_options())
        progress.clear()
        if isinstance(outcome, BatchgenError):
            raise outcome
    except BatchgenError as e:
        result["error"] = str(e)
        err(str(e))
        return e.code
    except KeyboardInterrupt:
        result["error"] = "interrupted"
        err("interrupted; run the same command again to resume")
        return ExitCode.INTERRUPTED
    result["outcome"] = outcome
    if log is not None:
        log.emit(
            "summary",
            "info" if outcome.exit_code == 0 else "error" if outcome.exit_code != 1 else "warning",
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            counts=outcome.counts,
            spent_usd=round(outcome.spent_usd, 6),
        )
    else:
        _summary(outcome)
    return outcome.exit_code


def _leave_at_once() -> None:
    """A second SIGINT/SIGTERM: exit 130 now. The engine has synced the ledger; nothing else is owed."""
    os._exit(ExitCode.INTERRUPTED)


def cmd_plan(args: argparse.Namespace) -> int:
    from batchgen.app.runner import RunOptions, dry_run

    opts = RunOptions(
        manifest=args.manifest, out=args.out, price=args.price, max_images=args.max_images,
        max_cost=args.max_cost, dry_run=True, retry_failed=args.retry_failed, base_url=args.base_url,
        shard_index=args.shard_index, shard_count=args.shard_count, cache_dir=args.cache_dir,
    )
    return anyio.run(dry_run, opts, say)


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
    if c.get("recovered"):
        extra.append(f"{c['recovered']} found in the request history instead of paid again")
    if c["uncertain_resubmits"]:
        extra.append(f"{c['uncertain_resubmits']} uncertain submit(s) from an earlier crash sent again")
    if c["possible_double_charges"]:
        extra.append(f"{c['possible_double_charges']} submit(s) retried after a lost answer (may be billed twice)")
    if c["expired_resubmits"]:
        extra.append(f"{c['expired_resubmits']} expired unread and submitted again")
    if c["rate_limited"]:
        extra.append(f"{c['rate_limited']} rate-limit answers")
    say("batchgen: " + ", ".join(parts) + (" — " + "; ".join(extra) if extra else ""))
    reason = outcome.reason  # type: ignore[attr-defined]
    if reason:
        err(f"stopped: {reason}")
