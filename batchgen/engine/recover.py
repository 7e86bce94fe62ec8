"""Recover, never repay: the account's request history is asked before anything is paid for again.

The service has no idempotency key, and its request records live an hour. Two things used to cost
a second payment: a request whose record expired unread (the worker was down, the generation ran
long), and a submit whose answer was lost (a dropped connection, a crash between the POST and the
ledger line). The request history keeps every request of the account, of any age, with the body
as it was sent, and the output file outlives the record by days; so a run asks it first.

- An expired record (``take_expired``): ``request-history/{id}``. COMPLETED with a generation URL
  is recorded ``completed`` (its cost from ``credits_deduction``) and downloaded; FAILED fails the
  item as a FAILED generation does; PENDING or not landed yet is asked again, up to
  ``RecoveryPolicy.expired_wait_s``, then the item fails retryable (it may still be running: this
  run never pays for it again); only a request the history does not know is submitted again.
- A lost answer (``take_lost``, and the intents without an answer a run resumes): engine/lost.py.

Without a history (404/405 on the list at run start, a refused key, no such host) the run does
what it did before there was one, after one warning line. Every history call goes through the
client's ``acquire`` hook, so it counts against ``--rpm`` when polls do.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, assert_never

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from batchgen.api.outcomes import (
    HistoryNotFound,
    HistoryPage,
    HistoryRow,
    HistoryRows,
    HistoryUnavailable,
    ItemFatal,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.engine.asking import HistoryAccess, HistorySource
from batchgen.engine.context import Job, Run
from batchgen.engine.keys import RETIRING
from batchgen.engine.lost import LostSubmits
from batchgen.engine.matching import HOW_BY_ID
from batchgen.engine.waiting import wait_event

__all__ = ["HistorySource", "Recovery"]


class _Watch:
    """An expired request being asked about in the history."""

    __slots__ = ("first", "job", "tries", "why")

    def __init__(self, job: Job, why: str, first: float) -> None:
        self.job, self.why, self.first, self.tries = job, why, first, 0


class Recovery:
    """The run's recovery: ``Run.recovery`` (the ``Recovering`` hooks) and a task in the run's group."""

    def __init__(self, run: Run, history: HistorySource, *, warn: Callable[[str], None] | None = None) -> None:
        self.run = run
        self.access = HistoryAccess(run, history, warn=warn)
        self.policy = self.access.policy
        self.lost = LostSubmits(self.access)
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._active = 0
        self._wake = anyio.Event()
        self._scope = anyio.CancelScope()
        self.access.on_change.append(self._poke)
        self.access.on_unavailable.append(self._give_back)

    def bind(self, to_poller: MemoryObjectSendStream[Job], to_downloader: MemoryObjectSendStream[Job]) -> None:
        """Where recovered requests go on: polled while running, downloaded once COMPLETED."""
        self.access.to_poller, self.access.to_downloader = to_poller, to_downloader

    # --- the Recovering hooks (context.py) -----------------------------------------------------

    def take_expired(self, job: Job, why: str) -> bool:
        if self.access.available is False:
            return False
        self._push(_Watch(job, why, self.run.clock()), self.run.clock())
        return True

    def take_lost(self, item: Any, params: dict[str, Any], sent_at: float, why: str, key: int = 0) -> bool:
        if self.access.available is False:
            return False
        self.lost.add_live(item, params, sent_at, why, key)
        return True

    def note_known(self, request_id: str) -> None:
        self.access.known.add(request_id)

    def expect_resumed(self, items: list[Any]) -> None:
        """The items whose intents an earlier run left without an answer (``take_resumed`` follows)."""
        self.lost.resumed = frozenset(it.id for it in items)

    def take_resumed(self, item: Any) -> None:
        """An intent an earlier run left without an answer (the item holds a slot): asked by body."""
        if self.access.available is False:
            self.run.on_pay_again(item, None, uncertain=True, resumed=True)
            return
        self.lost.add_resumed(item)

    # --- running -------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Probe the history, then answer expired records and lost submits until ``close``."""
        with self._scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.lost.serve)
                await self.access.probe()
                await self._serve_expired()

    def close(self) -> None:
        """Nothing is in flight any more, so nothing waits here: the task ends (a probe still out
        is not waited for, so a run with nothing to do ends at once)."""
        self.access.closed = True
        self._scope.cancel()

    def _poke(self) -> None:
        self._wake.set()

    def _give_back(self) -> None:
        while self._heap:
            watch = heapq.heappop(self._heap)[2]
            self.run.expire(watch.job, watch.why)

    # --- expired records, by id ----------------------------------------------------------------

    def _push(self, watch: _Watch, at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), watch))
        self._wake.set()

    async def _serve_expired(self) -> None:
        limiter = anyio.CapacityLimiter(max(1, self.policy.workers))

        async def one(watch: _Watch) -> None:
            try:
                async with limiter:
                    await self.look_up(watch)
            finally:
                self._active -= 1
                self._wake.set()

        async with anyio.create_task_group() as tg:
            while True:
                self._wake = anyio.Event()
                now = self.run.clock()
                available = self.access.available
                while available and self._heap and self._heap[0][0] <= now:
                    self._active += 1
                    tg.start_soon(one, heapq.heappop(self._heap)[2])
                if self.access.closed and not self._heap and self._active == 0:
                    return
                timeout = self._heap[0][0] - now if self._heap and available else math.inf
                await wait_event(self._wake, timeout)

    async def look_up(self, watch: _Watch) -> None:
        """Ask the history about one expired request and act on the answer (the decision table)."""
        run, job = self.run, watch.job
        assert job.request_id is not None
        watch.tries += 1
        got = await self.access.for_key(job.key).get(job.request_id)
        now = run.clock()
        match got:
            case HistoryRow(status="COMPLETED", generation_url=str(url)) if url:
                run.on_completed_in_history(job, url, got.cost_usd if got.billed else None, HOW_BY_ID)
                assert self.access.to_downloader is not None
                await self.access.to_downloader.send(job)
            case HistoryRow(status="FAILED"):
                run.on_failed(job, "generate", f"generation FAILED: {got.error or 'no reason given'}", retryable=False)
            case HistoryRow():
                shown = "not landed yet" if not got.landed else f"{got.status} without an image"
                self._again(watch, now, f"the request history still shows it {shown}")
            case HistoryNotFound():
                run.expire(job, f"{watch.why}; the request history does not know it either")
            case RateLimited() | Retryable():
                pause = self.access.pause_after(got, watch.tries, job.key)
                self._again(watch, now, f"the request history did not answer ({got.message})", pause)
            case RunFatal(kind=kind) if kind in RETIRING and len(run.keys) > 1:
                run.on_fatal(job, got)  # this key's history refuses it: the key leaves, the others go on
            case HistoryUnavailable() | RunFatal():
                self.access.unavailable(got.message)
                run.expire(job, watch.why)
            case ItemFatal() | HistoryPage() | HistoryRows():
                self._again(watch, now, f"the request history answered {got!r:.120}")
            case _:
                assert_never(got)

    def _again(self, watch: _Watch, now: float, shown: str, pause: float | None = None) -> None:
        """Ask again later, unless this has gone on for ``expired_wait_s``: then the item fails,
        retryable, and is not paid for again in this run (the service may still be running it)."""
        bound = self.policy.expired_wait_s
        waited = now - watch.first
        if waited >= bound:
            self.run.on_failed(
                watch.job, "poll",
                f"record expired unread ({watch.why}) and {shown} after {waited:.0f} s; not paid for again in "
                "this run, as it may still be running (the next run submits it again)",
                retryable=True,
            )
            return
        wait = pause if pause is not None else self.policy.recheck(watch.tries)
        self._push(watch, now + min(wait, max(0.0, bound - waited)))

    def waiting(self) -> list[tuple[float, Job]]:
        """Expired requests waiting for their next question, soonest first (for tests)."""
        return [(at, w.job) for at, _, w in sorted(self._heap, key=lambda e: e[:2])]
