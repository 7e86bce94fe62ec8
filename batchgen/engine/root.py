"""The composition root of one run: builds the streams and stages, wires them in one task group.

Replay has happened before this point (the caller passes the ledger and the plan); this module
routes every item to the stage its state says, runs submitter, poller and downloader until nothing
is left, and concludes the outcome. It never ends the process: the caller decides how to exit.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.client import Client
from batchgen.core.errors import ExitCode
from batchgen.engine.context import Job, Run, RunConfig, RunOutcome
from batchgen.engine.download import downloader, sweep_partials
from batchgen.engine.plan import plan
from batchgen.engine.poll import Poller
from batchgen.engine.submit import submitter
from batchgen.store import ledger as L
from batchgen.store.ledger import Ledger

__all__ = ["run_batch"]


async def run_batch(
    cfg: RunConfig,
    items: list[Any],
    out_dir: Path,
    ledger: Ledger,
    client: Client,
    *,
    on_start: Callable[[Run], None] | None = None,
    handle_signals: bool = True,
    groups: dict[str, list[Any]] | None = None,
) -> RunOutcome:
    """Drive every item as far as it can go in this run; the ledger records every step.

    ``groups``: ``plan`` of these items against ``ledger.state`` when the caller has just made it
    (planning 100k items is a noticeable part of a resume); planned here otherwise.
    """
    run = Run(cfg, items, out_dir, ledger, client)
    run.images_dir.mkdir(parents=True, exist_ok=True)
    sweep_partials(run.images_dir)
    if groups is None:
        groups = plan(items, ledger.state, run.images_dir)
    run.record("run_start", None, pid=os.getpid(), items=len(items), pending=len(groups["pending"]))

    # Uncertain intents: the POST may have been accepted; submitting again may pay twice.
    for it in groups["uncertain"]:
        run.counts["uncertain_resubmits"] += 1
        run.resubmit.append(it)
    run.resubmit.extend(groups["resubmit"])
    run.fresh = iter(groups["pending"])
    if on_start is not None:
        on_start(run)

    poll_send, poll_recv = anyio.create_memory_object_stream[Job](math.inf)
    dl_send, dl_recv = anyio.create_memory_object_stream[Job](max(1, cfg.download_workers))
    run.to_poller = poll_send
    run.to_downloader = dl_send
    poller = Poller(run)

    async def resume_in_flight() -> None:
        """Items already paid or submitted go straight to the stage that finishes them."""
        for it in groups["download"]:
            await run.slots.acquire()
            run.in_flight += 1
            await dl_send.send(Job(item=it, output_url=ledger.state.items[it.id].output_url))
        for it in groups["poll"]:
            st = ledger.state.items[it.id]
            await run.slots.acquire()
            run.in_flight += 1
            job = Job(item=it, request_id=st.request_id)
            job.deadline_mono = run.deadline_for(st.submitted_ts or run.wall())
            job.submitted_mono = run.clock() - max(0.0, run.wall() - (st.submitted_ts or run.wall()))
            if job.deadline_mono <= run.clock():
                # By our wall clock the record is gone, but that clock may have leapt forward while
                # no run was going: one poll, due now, asks the service before paying again.
                job.deadline_mono = run.clock()
            await poll_send.send(job)

    async def signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            async for _ in sigs:
                if run.interrupted:
                    # Second signal: leave at once; every ledger line is already flushed.
                    ledger.close()
                    os._exit(ExitCode.INTERRUPTED)
                run.interrupted = True
                run.stop_submitting("interrupted")
                for shield in list(run.shields):
                    shield.deadline = min(shield.deadline, anyio.current_time() + cfg.interrupt_grace_s)
                if run.cancel_scope is not None:
                    run.cancel_scope.cancel()

    async with anyio.create_task_group() as outer:
        if handle_signals:
            outer.start_soon(signals)
        with anyio.CancelScope() as scope:
            run.cancel_scope = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(poller.serve, poll_recv)
                tg.start_soon(downloader, run, dl_recv)

                async def feed_then_submit() -> None:
                    async with poll_send, dl_send:
                        await resume_in_flight()
                        await submitter(run)
                        # After a stop (budget, credits) the submitter returns early: what is in
                        # flight is paid for and must still reach the downloader.
                        while run.in_flight > 0:
                            await run.changed.wait()

                tg.start_soon(feed_then_submit)
        outer.cancel_scope.cancel()

    run.counts["rate_limited"] = run.limiter.rate_limited
    return _conclude(run)


def _conclude(run: Run) -> RunOutcome:
    state = run.ledger.state
    tally = {"downloaded": 0, "failed": 0, "failed_retryable": 0, "in_flight": 0, "pending": 0}
    for it in run.items:
        st = state.items.get(it.id)
        s = st.state if st else L.PENDING
        if s == L.DOWNLOADED:
            tally["downloaded"] += 1
        elif s == L.FAILED:
            tally["failed_retryable" if st and st.retryable else "failed"] += 1
        elif s in (L.SUBMITTED, L.COMPLETED, L.INTENT):
            tally["in_flight"] += 1
        else:
            tally["pending"] += 1
    counts = {**run.counts, **tally, "items": len(run.items)}
    if run.interrupted:
        code, reason = ExitCode.INTERRUPTED, "interrupted; run the same command again to resume"
    elif run.abort_reason:
        code, reason = ExitCode.ABORTED, run.abort_reason
    elif run.stop_reason and (tally["pending"] or tally["in_flight"] or tally["failed_retryable"]):
        code, reason = ExitCode.ABORTED, run.stop_reason
    elif tally["failed"] or tally["failed_retryable"] or tally["pending"] or tally["in_flight"]:
        code, reason = ExitCode.FAILED_ITEMS, None
    else:
        code, reason = ExitCode.OK, None
    try:
        run.ledger.append(
            "run_end",
            None,
            exit_code=int(code),
            reason=reason,
            counts=counts,
            spent_usd=round(run.spent_estimate(), 6),
        )
    except (OSError, RuntimeError):
        pass
    return RunOutcome(code, reason, counts, run.spent_estimate())
