"""The in-flight context of one run: its configuration, the jobs in flight and the shared state.

The stages (submit, poll, download) take a ``Run``; it holds the ledger (truth), the client, the
rate limiter, the concurrency slots and the counters. Core types live here so the stages import
this module and nothing imports the stages back.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from batchgen.engine.limits import RateLimiter
from batchgen.store.ledger import Ledger

if TYPE_CHECKING:
    from batchgen.api.client import Client

__all__ = ["Job", "Run", "RunConfig", "RunOutcome"]


@dataclass(frozen=True)
class RunConfig:
    slug: str
    price_usd: float
    concurrency: int = 16
    rpm: float | None = None
    rpm_scope: str = "all"  # which requests count against --rpm: "all" keyed requests or "submit" only
    max_images: int | None = None
    max_cost_usd: float | None = None
    retention_s: float = 3600.0
    expected_latency_s: float = 21.6
    submit_workers: int = 8
    poll_workers: int = 32
    download_workers: int = 8
    submit_retries: int = 5
    download_retries: int = 3
    max_expiries: int = 3  # resubmits after an expired record, per item, over all runs
    max_image_bytes: int = 50 * 1024 * 1024
    backoff_base_s: float = 1.0
    interrupt_grace_s: float = 3.0

    @property
    def retention_margin_s(self) -> float:
        """How long before the record's end the last poll must happen."""
        return min(120.0, self.retention_s * 0.05)


@dataclass
class Job:
    """An item in flight: it holds one concurrency slot until it is downloaded, failed or requeued."""

    item: Any  # manifest.Item
    request_id: str | None = None
    submitted_mono: float = 0.0
    deadline_mono: float = math.inf
    output_url: str | None = None
    polls: int = 0
    errors: int = 0
    not_before: float = 0.0
    last_poll_age: float = 0.0  # seconds after submission of the last poll that found it unfinished
    ready_s: float | None = None  # learned completion time of this job


@dataclass
class RunOutcome:
    exit_code: int
    reason: str | None
    counts: dict[str, int]
    spent_usd: float
    stats: dict[str, Any] = field(default_factory=dict)


class Run:
    """Shared state of one run; the stages call its methods, never each other's."""

    def __init__(
        self,
        cfg: RunConfig,
        items: list[Any],
        out_dir: Path,
        ledger: Ledger,
        client: Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.items = items
        self.by_id = {it.id: it for it in items}
        self.out_dir = out_dir
        self.images_dir = out_dir / "images"
        self.ledger = ledger
        self.client = client
        self.clock = clock
        self.wall = wall
        self.limiter = RateLimiter(cfg.rpm)
        self.slots = anyio.Semaphore(cfg.concurrency)
        self.resubmit: deque[Any] = deque()
        self.fresh: Iterator[Any] = iter(())
        self.in_flight = 0
        self.submitting = 0
        self.changed = anyio.Event()
        self.stop_reason: str | None = None  # stop submitting; finish what is in flight
        self.abort_reason: str | None = None  # stop everything now
        self.interrupted = False
        self.cancel_scope: anyio.CancelScope | None = None
        self.to_poller: MemoryObjectSendStream[Job] | None = None
        self.to_downloader: MemoryObjectSendStream[Job] | None = None
        # Seeded from earlier runs' results, so a resume polls well from its first request.
        self.latencies: deque[float] = deque(ledger.state.latencies, maxlen=256)
        self.started = clock()
        self._peeked: Any = None
        self.shields: set[anyio.CancelScope] = set()
        self.post_lock = anyio.Lock()
        self.counts: dict[str, int] = {
            "submitted": 0,
            "downloaded": 0,
            "failed": 0,
            "expired_resubmits": 0,
            "uncertain_resubmits": 0,
            "possible_double_charges": 0,
            "rate_limited": 0,
            "retries": 0,
            "polls": 0,
        }

    # --- bookkeeping --------------------------------------------------------------------------

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def finish(self, job: Job) -> None:
        """The item left the pipeline (downloaded, failed or requeued): free its slot."""
        self.in_flight -= 1
        self.slots.release()
        self.notify()

    def requeue(self, job: Job) -> None:
        self.resubmit.append(job.item)
        self.finish(job)

    def expire(self, job: Job, why: str) -> None:
        """The request record is gone (or about to be) unread: submit again, a bounded number of times.

        Each resubmit is a new, billed job; an item whose generation keeps outliving the
        retention would otherwise be paid for forever.
        """
        item_id = job.item.id
        self.record("expired", item_id, request_id=job.request_id, error=why,
                    note="record expired before it was read; submitting again")
        st = self.ledger.state.items.get(item_id)
        if st is not None and st.expired > self.cfg.max_expiries:
            self.record("failed", item_id, stage="poll", request_id=job.request_id, retryable=False,
                        error=f"expired unread {st.expired} times ({why}); not submitting it again")
            self.counts["failed"] += 1
            self.finish(job)
            return
        self.counts["expired_resubmits"] += 1
        self.requeue(job)

    def stop_submitting(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.notify()

    def abort(self, reason: str) -> None:
        """A fatal answer: everything stops now; in-flight request_ids are already in the ledger."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.stop_submitting(reason)
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def spent_estimate(self) -> float:
        st = self.ledger.state
        return st.spent_usd + st.completed_without_cost * self.cfg.price_usd

    def unpaid_in_flight(self) -> int:
        return self.in_flight + self.submitting

    def budget_allows_one_more(self) -> str | None:
        """None when one more submit fits the budget, else why not."""
        cfg = self.cfg
        if cfg.max_images is not None:
            total = self.ledger.state.submits + self.submitting
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

    def expected_latency(self) -> float:
        if len(self.latencies) >= 3:
            s = sorted(self.latencies)
            return s[len(s) // 2]
        return self.cfg.expected_latency_s

    def deadline_for(self, submitted_wall: float) -> float:
        """Monotonic instant by which the record must have been read (wall time only crosses runs)."""
        remaining = submitted_wall + self.cfg.retention_s - self.wall()
        return self.clock() + remaining - self.cfg.retention_margin_s

    def record(self, event: str, item: str | None, **fields: Any) -> None:
        """Append to the ledger; a failed write (disk full) stops the run at the caller's next await."""
        try:
            self.ledger.append(event, item, **fields)
        except OSError as e:
            self.abort(f"cannot write the ledger {self.ledger.path}: {e.strerror or e}")

    async def next_submission(self) -> Any | None:
        """The next item to submit, waiting while in-flight items may still come back; None when done."""
        while True:
            if self.stop_reason is not None:
                return None
            why = self.budget_allows_one_more()
            if why is not None and (self.resubmit or self._has_fresh()):
                if self.submitting:
                    # Submits already admitted count against the budget but have not been sent:
                    # a stop now would cancel them too. Let them settle, then look again.
                    await self.changed.wait()
                    continue
                self.stop_submitting(why)
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
            self._peeked = next(self.fresh, None)
        return self._peeked is not None

    def _take_fresh(self) -> Any | None:
        if self._has_fresh():
            nxt, self._peeked = self._peeked, None
            return nxt
        return None
