"""Admission and budget: which item is submitted next, and whether one more submit may be paid for.

An item holds one concurrency slot from the moment it is taken for submission until it is
downloaded, failed or requeued; ``submitting`` and ``in_flight`` count the two halves of that.
The budget (``--max-images``, ``--max-cost``) is checked against the ledger (every run's submits
and spend) plus what this run has admitted but not yet paid for.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import anyio

from batchgen.engine.config import RunConfig
from batchgen.engine.stopping import Pulse, StopControl
from batchgen.store.ledger import LedgerState

__all__ = ["Admission"]


class Admission:
    def __init__(self, cfg: RunConfig, state: LedgerState, stop: StopControl, changed: Pulse) -> None:
        self.cfg = cfg
        self.state = state  # the ledger's live state: submits and spend of every run
        self.stop = stop
        self.changed = changed
        self.slots = anyio.Semaphore(cfg.concurrency)
        self.resubmit: deque[Any] = deque()
        self._fresh: Iterator[Any] = iter(())
        self._peeked: Any = None
        self.in_flight = 0  # submitted (or resumed) and not yet downloaded, failed or requeued
        self.submitting = 0  # taken for submission, no request_id yet

    def queue(self, resubmit: Iterable[Any], fresh: Iterable[Any]) -> None:
        """Items to submit: ``resubmit`` ones first (they were tried before), then ``fresh`` ones, lazily."""
        self.resubmit.extend(resubmit)
        self._fresh = iter(fresh)

    # --- the life of a slot -------------------------------------------------------------------

    async def next_submission(self) -> Any | None:
        """The next item to submit, holding a slot and counted as submitting; None when there is none.

        Waits while items in flight may still come back (an expired record is submitted again).
        """
        await self.slots.acquire()
        item = await self._next()
        if item is None:
            self.slots.release()
            return None
        self.submitting += 1
        return item

    def waiting(self) -> bool:
        """Whether anything is still to be submitted (taken, queued, or yet to be read)."""
        return self.submitting > 0 or bool(self.resubmit) or self._has_fresh()

    def withdraw(self) -> None:
        """A submit ended without a request_id (failed, refused, stopped): its slot is free."""
        self.submitting -= 1
        self.slots.release()
        self.changed.fire()

    def accepted(self) -> None:
        """A submit got its request_id: the item keeps its slot, now in flight."""
        self.submitting -= 1
        self.in_flight += 1
        self.changed.fire()

    async def resume(self) -> None:
        """An item an earlier run submitted (or paid for) enters this run in flight."""
        await self.slots.acquire()
        self.in_flight += 1

    def finish(self) -> None:
        """An item left the pipeline (downloaded, failed or requeued): free its slot."""
        self.in_flight -= 1
        self.slots.release()
        self.changed.fire()

    def requeue(self, item: Any) -> None:
        self.resubmit.append(item)
        self.finish()

    async def drained(self) -> None:
        """Returns once nothing is in flight: what was paid for has been downloaded or failed."""
        while self.in_flight > 0:
            await self.changed.wait()

    # --- budget -------------------------------------------------------------------------------

    def spent_estimate(self) -> float:
        st = self.state
        return st.spent_usd + st.completed_without_cost * self.cfg.price_usd

    def unpaid_in_flight(self) -> int:
        return self.in_flight + self.submitting

    def budget_allows_one_more(self) -> str | None:
        """None when one more submit fits the budget, else why not."""
        cfg = self.cfg
        if cfg.max_images is not None:
            total = self.state.submits + self.submitting
            if total >= cfg.max_images:
                return f"budget reached: --max-images {cfg.max_images} images submitted"
        if cfg.max_cost_usd is not None:
            projected = self.spent_estimate() + (self.unpaid_in_flight() + 1) * cfg.price_usd
            if projected > cfg.max_cost_usd + 1e-9:
                return (
                    f"budget reached: --max-cost ${cfg.max_cost_usd:.2f} "
                    f"(spent ${self.spent_estimate():.2f}, {self.unpaid_in_flight()} in flight)"
                )
        return None

    # --- internals ----------------------------------------------------------------------------

    async def _next(self) -> Any | None:
        while True:
            if self.stop.stopping:
                return None
            why = self.budget_allows_one_more()
            if why is not None and (self.resubmit or self._has_fresh()):
                if self.submitting:
                    # Submits already admitted count against the budget but have not been sent:
                    # a stop now would cancel them too. Let them settle, then look again.
                    await self.changed.wait()
                    continue
                self.stop.stop_submitting(why)
                return None
            if self.resubmit:
                return self.resubmit.popleft()
            nxt = self._take_fresh()
            if nxt is not None:
                return nxt
            if self.in_flight == 0 and self.submitting == 0:
                return None
            await self.changed.wait()

    def _has_fresh(self) -> bool:
        if self._peeked is None:
            self._peeked = next(self._fresh, None)
        return self._peeked is not None

    def _take_fresh(self) -> Any | None:
        if self._has_fresh():
            nxt, self._peeked = self._peeked, None
            return nxt
        return None
