"""The composition root of one run: builds the streams and stages, wires them in one task group.

Replay has happened before this point (the caller passes the ledger and, usually, the plan); this
module routes every item to the stage its state says, runs submitter, poller and downloader until
nothing is left, and concludes the outcome. It never ends the process: on a second interrupt it
syncs the ledger and calls the caller's ``on_second_signal``, and the caller decides how to exit.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from batchgen.engine.conclude import conclude
from batchgen.engine.config import RunConfig
from batchgen.engine.context import Job, PoolKey, Run, RunOutcome, ServiceClient
from batchgen.engine.counters import SnapshotSource
from batchgen.engine.download import downloader, sweep_partials
from batchgen.engine.plan import PlanGroup, plan
from batchgen.engine.poll import Poller
from batchgen.engine.recover import HistorySource, Recovery
from batchgen.engine.submit import submitter
from batchgen.store.events import EventKind
from batchgen.store.ledger import Ledger
from batchgen.store.storage import Storage

__all__ = ["run_batch"]


async def run_batch(
    cfg: RunConfig,
    items: list[Any],
    out_dir: Path,
    ledger: Ledger,
    client: ServiceClient | Sequence[PoolKey],
    *,
    on_start: Callable[[SnapshotSource], None] | None = None,
    on_second_signal: Callable[[], None] | None = None,
    handle_signals: bool = True,
    groups: dict[str, list[Any]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    history: Callable[[Callable[[], Awaitable[None]] | None], HistorySource] | None = None,
    on_warning: Callable[[str], None] | None = None,
    storage: Storage | None = None,
) -> RunOutcome:
    """Drive every item as far as it can go in this run; the ledger records every step.

    ``client``: the service client of the run's one key, or its pool of keys (keys.py), each
    ``PoolKey`` with its own history factory.
    ``groups``: ``plan`` of these items against ``ledger.state`` when the caller has just made it
    (planning 100k items is a noticeable part of a resume); planned here otherwise.
    ``on_start`` receives the run's snapshot source for a progress display. ``on_second_signal``:
    what a second SIGINT/SIGTERM does once the ledger is synced (the command line leaves at once);
    without it, the second signal only cuts the grace of requests in flight.
    ``clock`` (monotonic) and ``wall`` (epoch) are every time reading of the run's stages.
    ``history``: makes the account's request history client, given the hook that puts its calls
    under the run's rate limiter (None when they do not count); without it, nothing is recovered
    and a lost answer or an expired record is paid for again (with a pool, each ``PoolKey``
    brings its own; this one serves key 0). ``on_warning``: one line to show.
    ``storage``: where verified images go, ``out_dir`` being its local working folder (the output
    folder itself by default).
    """
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    sweep_partials(images_dir)
    if groups is None:
        groups = plan(items, ledger.state, images_dir, files=None if storage is None else storage.files())
    run = Run(cfg, items, out_dir, ledger, client, clock=clock, wall=wall, done_before=len(groups["done"]),
              storage=storage)
    if on_warning is not None:
        run.warn = on_warning
    run.record(EventKind.RUN_START, None, pid=os.getpid(), items=len(items), pending=len(groups["pending"]))

    recovery: Recovery | None = None
    changed_then_new = itertools.chain(groups.get(PlanGroup.CHANGED, ()), groups[PlanGroup.PENDING])
    for slot in run.keys.slots:
        make = slot.make_history or (history if slot.index == 0 else None)
        if make is not None:
            # Each key's history calls count against that key's limiter when polls do.
            slot.history = make(slot.limiter.acquire if cfg.rpm_scope == "all" else None)
    first_history = next((s.history for s in run.keys.slots if s.history is not None), None)
    # The history matters only where something may be (or may have been) paid for: a run left with
    # downloads alone, or nothing at all, asks it nothing (a finished shard restarted sends nothing).
    asks = (PlanGroup.PENDING, PlanGroup.RESUBMIT, PlanGroup.RETRY_FAILED, PlanGroup.CHANGED,
            PlanGroup.UNCERTAIN, PlanGroup.POLL)
    if first_history is not None and any(groups.get(g) for g in asks):
        recovery = run.recovery = Recovery(run, first_history, warn=on_warning)
        # Uncertain intents are looked for in the history before anything is paid again.
        recovery.expect_resumed(groups[PlanGroup.UNCERTAIN])
        run.admission.queue(
            resubmit=[*groups[PlanGroup.RESUBMIT], *groups.get(PlanGroup.RETRY_FAILED, ())], fresh=changed_then_new
        )
    else:
        # Uncertain intents: the POST may have been accepted; submitting again may pay twice.
        run.counters.uncertain_resubmits = len(groups[PlanGroup.UNCERTAIN])
        # Items tried before go first; an edited item is a new generation, like a pending one (its
        # earlier image stays in place until the new one is downloaded: see ``supersede``).
        run.admission.queue(
            resubmit=[*groups[PlanGroup.UNCERTAIN], *groups[PlanGroup.RESUBMIT],
                      *groups.get(PlanGroup.RETRY_FAILED, ())],
            fresh=changed_then_new,
        )
    if on_start is not None:
        on_start(run.snapshot)

    poll_send, poll_recv = anyio.create_memory_object_stream[Job](math.inf)
    dl_send, dl_recv = anyio.create_memory_object_stream[Job](max(1, cfg.download_workers))
    poller = Poller(run, to_downloader=dl_send)
    if recovery is not None:
        recovery.bind(to_poller=poll_send, to_downloader=dl_send)

    async def feed_then_submit() -> None:
        async with poll_send, dl_send:
            await _resume_in_flight(run, groups, poll_send, dl_send)
            if recovery is not None:
                for it in groups["uncertain"]:
                    await run.admission.resume()  # it keeps a slot while the history is asked
                    recovery.take_resumed(it)
            await submitter(run, to_poller=poll_send)
            # After a stop (budget, credits) the submitter returns early: what is in flight is
            # paid for (or being looked for in the history) and must still reach the downloader.
            await run.admission.drained()
            if recovery is not None:
                recovery.close()

    async with anyio.create_task_group() as outer:
        if handle_signals:
            outer.start_soon(_watch_signals, run, on_second_signal)
        with run.stop.cancellable():
            async with anyio.create_task_group() as tg:
                tg.start_soon(poller.serve, poll_recv)
                tg.start_soon(downloader, run, dl_recv)
                if recovery is not None:
                    tg.start_soon(recovery.serve)
                tg.start_soon(feed_then_submit)
        outer.cancel_scope.cancel()

    return conclude(run, changed={it.id for it in groups.get(PlanGroup.CHANGED, ())})


async def _resume_in_flight(
    run: Run,
    groups: dict[str, list[Any]],
    to_poller: MemoryObjectSendStream[Job],
    to_downloader: MemoryObjectSendStream[Job],
) -> None:
    """Items already paid or submitted go straight to the stage that finishes them, each request
    with the key that made it (its fingerprint in the ledger names it)."""
    states = run.ledger.state.items
    for it in groups["download"]:
        await run.admission.resume()
        await to_downloader.send(Job(item=it, output_url=states[it.id].output_url))
    elsewhere: dict[str, int] = {}
    for it in groups["poll"]:
        st = states[it.id]
        key = run.keys.index_of(st.key_fp)
        submitted_wall = st.submitted_ts or run.wall()
        if key is None and run.deadline_for(submitted_wall) > run.clock():
            # Made with a key this run does not have: only that key may read it, and another's
            # poll would read as "not found" and pay again. Left for a run that has the key.
            elsewhere[st.key_fp or ""] = elsewhere.get(st.key_fp or "", 0) + 1
            continue
        await run.admission.resume()
        job = Job(item=it, request_id=st.request_id, key=key or 0)
        job.deadline_mono = run.deadline_for(submitted_wall)
        job.submitted_mono = run.clock() - max(0.0, run.wall() - submitted_wall)
        if key is None:
            # Its key is gone and so is its record, by now, for every key: what an expired record
            # gets (the history of key 0, then a new submit).
            run.on_expired(job, "made with a key this run does not have, and past its retention")
            continue
        if job.deadline_mono <= run.clock():
            # By our wall clock the record is gone, but that clock may have leapt forward while
            # no run was going: one poll, due now, asks the service before paying again.
            job.deadline_mono = run.clock()
        await to_poller.send(job)
    if elsewhere:
        named = ", ".join(f"{n} by key {fp}" for fp, n in sorted(elsewhere.items()))
        run.warn(f"{sum(elsewhere.values())} request(s) in flight were made with a key that is not in this "
                 f"run's keys ({named}): left as they are, for a run that has the key (after their "
                 "retention they are submitted again)")


async def _watch_signals(run: Run, on_second_signal: Callable[[], None] | None) -> None:
    """SIGINT/SIGTERM: the first stops the run with a grace for requests in flight; the second ends it."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if not run.stop.interrupted:
                run.stop.interrupt()
                continue
            # Every ledger line is already flushed; the sync makes them durable before any exit.
            with suppress(OSError):
                run.ledger.sync()
            run.stop.end_grace()
            if on_second_signal is not None:
                on_second_signal()
