"""One batch run: replay the ledger, then drive submitter → poller → downloader in one task group.

The stages share a ``Run``: the ledger (truth), the client, the rate limiter, the concurrency slots
and the run's counters. Items are taken from the manifest in order; an item that needs more work
after a resume enters the pipeline at the stage its ledger state says. The run ends when nothing is
left to submit and nothing is in flight, or when a stop (budget, credits, fatal answer, signal)
has drained what it must.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from batchgen import ledger as L
from batchgen.client import Client
from batchgen.ledger import Ledger, utc_now
from batchgen.limits import RateLimiter

__all__ = ["Job", "Run", "RunConfig", "RunOutcome", "loop_options", "params_sha", "plan", "run_batch"]

EXIT_OK = 0
EXIT_FAILED_ITEMS = 1
EXIT_BAD_INPUT = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130


def loop_options() -> dict[str, Any]:
    """``anyio.run`` options: uvloop when installed (about a fifth less CPU per request), else asyncio."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {"backend": "asyncio"}
    return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}


def params_sha(params: Any) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


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


def plan(items: list[Any], state: L.LedgerState, images_dir: Path) -> dict[str, list[Any]]:
    """Sort items by where a run must pick them up, from the ledger's state alone (plus file checks)."""
    out: dict[str, list[Any]] = {
        "done": [],
        "failed": [],
        "poll": [],
        "download": [],
        "resubmit": [],
        "uncertain": [],
        "pending": [],
    }
    for it in items:
        st = state.items.get(it.id)
        if st is None:
            out["pending"].append(it)
            continue
        if st.state == L.DOWNLOADED:
            if st.file and (images_dir.parent / st.file).is_file():
                out["done"].append(it)
            elif st.output_url:
                out["download"].append(it)
            else:
                out["pending"].append(it)
        elif st.state == L.COMPLETED and st.output_url:
            out["download"].append(it)
        elif st.state == L.SUBMITTED and st.request_id:
            out["poll"].append(it)
        elif st.state == L.INTENT:
            out["uncertain"].append(it)
        elif st.state == L.FAILED:
            # Hashing the parameters costs more than the rest of the plan: only a failed item uses it.
            changed = st.params_sha is not None and st.params_sha != params_sha(dict(it.params))
            if st.paid and st.output_url and not changed:
                out["download"].append(it)
            elif st.retryable or changed:
                out["resubmit"].append(it)
            else:
                out["failed"].append(it)
        else:
            out["pending"].append(it)
    return out


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
    from batchgen.downloader import downloader, sweep_partials
    from batchgen.poller import Poller
    from batchgen.submitter import submitter

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
                    os._exit(EXIT_INTERRUPTED)
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
        code, reason = EXIT_INTERRUPTED, "interrupted; run the same command again to resume"
    elif run.abort_reason:
        code, reason = EXIT_ABORTED, run.abort_reason
    elif run.stop_reason and (tally["pending"] or tally["in_flight"] or tally["failed_retryable"]):
        code, reason = EXIT_ABORTED, run.stop_reason
    elif tally["failed"] or tally["failed_retryable"] or tally["pending"] or tally["in_flight"]:
        code, reason = EXIT_FAILED_ITEMS, None
    else:
        code, reason = EXIT_OK, None
    try:
        run.ledger.append(
            "run_end",
            None,
            exit_code=code,
            reason=reason,
            counts=counts,
            spent_usd=round(run.spent_estimate(), 6),
        )
    except (OSError, RuntimeError):
        pass
    return RunOutcome(code, reason, counts, run.spent_estimate())


__all__ += ["EXIT_OK", "EXIT_FAILED_ITEMS", "EXIT_BAD_INPUT", "EXIT_ABORTED", "EXIT_INTERRUPTED", "utc_now"]
