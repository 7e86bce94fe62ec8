"""The poller: one scheduler holding every in-flight request_id, and a fixed pool of workers.

Jobs sit in a heap ordered by when they should next be polled, ties broken by retention deadline
(earliest deadline first). The first poll of a job is placed near the completion time learned from
the latencies seen so far, later ones at rising quantiles, then backing off; no poll is ever
scheduled past the job's deadline, so no id reaches the end of its retention unread. A COMPLETED
status goes straight to the result fetch and the job on to the downloader.

Which quantiles depends on what a poll costs. When polls count against a known rate limit, every
poll is a generation not submitted, so the ladder is sparse (about 1.2 polls per image). When
nothing says polls are free (the default: the real service does not say), the ladder stays under
two polls per image. When ``--rpm-scope submit`` says they are free, a dense ladder fetches
results within about 5 % of the mean latency (about 6.5 polls per image at the sandbox's
spread); see BENCHMARKS.md for the measured trade-off and ``benchmarks/ladder_sim.py``.
"""

from __future__ import annotations

import heapq
import itertools
import math

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from batchgen.api.outcomes import Expired, JobResult, JobStatus, RateLimited, Retryable, RunFatal
from batchgen.engine.context import Job, Run
from batchgen.engine.limits import backoff_delay

__all__ = ["BALANCED", "ECONOMY", "PROMPT", "Poller", "next_poll_at"]

# (quantiles of the learned latency, first gap beyond them as a fraction of the median, growth)
ECONOMY = ((0.85, 0.97), 0.1, 1.5)
BALANCED = ((0.5, 0.75, 0.9, 0.97), 0.1, 1.5)
PROMPT = (tuple(i / 12 for i in range(1, 12)) + (0.96, 0.99), 0.05, 1.2)
QUANTILES = BALANCED[0]
COLD_FIRST_POLL_S = 0.5  # with nothing learned yet: 0.5 s, then doubling
MAX_GAP_S = 30.0


def _quantile(sorted_samples: list[float], q: float) -> float:
    return sorted_samples[min(len(sorted_samples) - 1, int(q * (len(sorted_samples) - 1) + 0.5))]


def next_poll_at(
    job: Job,
    now: float,
    samples: list[float],
    default_latency: float,
    ladder: tuple[tuple[float, ...], float, float] = BALANCED,
    *,
    presorted: bool = False,
) -> float:
    """When to poll ``job`` next, from the latency distribution seen so far (pure, for tests).

    With samples, polls go to rising quantiles of the distribution, then back off from a fraction
    of the median. With none, a geometric ladder from 0.5 s finds any latency within a factor of
    two in a few polls; the first results seed the distribution and, through the ledger, the next
    run's.
    """
    age = now - job.submitted_mono
    if len(samples) >= 3:
        s = samples if presorted else sorted(samples)
        quantiles, first_gap, growth = ladder
        median = _quantile(s, 0.5)
        min_gap = max(0.02, 0.03 * median)
        if job.polls < len(quantiles):
            for q in quantiles[job.polls :]:
                target = _quantile(s, q)
                if target > age + min_gap:
                    return job.submitted_mono + target
        beyond = min(40, max(0, job.polls - len(quantiles)))
        gap = min(MAX_GAP_S, max(min_gap, first_gap * median * growth**beyond))
        return now + gap
    first = min(max(default_latency, 0.05) * 0.5, COLD_FIRST_POLL_S)
    target = first * 2.0 ** min(job.polls, 40)
    if target > age:
        return job.submitted_mono + min(target, age + MAX_GAP_S)
    return now + min(MAX_GAP_S, max(first, target - age))


class Poller:
    def __init__(self, run: Run) -> None:
        self.run = run
        self._heap: list[tuple[float, float, int, Job]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._active = 0
        self._intake_done = False
        self._sorted: list[float] = []
        self._sorted_n = -1  # len(run.latencies) + learned count when _sorted was built
        self._learned = 0

    def ladder(self) -> tuple[tuple[float, ...], float, float]:
        """Dense when polls are free, sparse when they eat into a known rate limit."""
        run = self.run
        if run.cfg.rpm_scope != "all":
            return PROMPT
        if run.limiter.current_rpm is not None:
            return ECONOMY
        return BALANCED

    def samples(self) -> list[float]:
        """The learned latencies, sorted; re-sorted only after new results, not on every poll."""
        if self._sorted_n != self._learned:
            self._sorted = sorted(self.run.latencies)
            self._sorted_n = self._learned
        return self._sorted

    def next_at(self, job: Job, now: float) -> float:
        return next_poll_at(job, now, self.samples(), self.run.cfg.expected_latency_s, self.ladder(), presorted=True)

    def schedule(self, job: Job, at: float) -> None:
        at = min(at, job.deadline_mono)
        heapq.heappush(self._heap, (at, job.deadline_mono, next(self._seq), job))
        self._wake.set()

    def first_poll(self, job: Job) -> None:
        self.schedule(job, self.next_at(job, self.run.clock()))

    async def _intake(self, inbox: MemoryObjectReceiveStream[Job]) -> None:
        async with inbox:
            async for job in inbox:
                self.first_poll(job)
        self._intake_done = True
        self._wake.set()

    async def serve(self, inbox: MemoryObjectReceiveStream[Job]) -> None:
        """Hand due jobs to a fixed pool of workers: no task per poll, back-pressure when all are busy."""
        workers = max(1, self.run.cfg.poll_workers)
        due_send, due_recv = anyio.create_memory_object_stream[Job](workers)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._intake, inbox)
            for _ in range(workers):
                tg.start_soon(self._worker, due_recv.clone())
            due_recv.close()
            async with due_send:
                while True:
                    self._wake = anyio.Event()
                    now = self.run.clock()
                    while self._heap and self._heap[0][0] <= now:
                        job = heapq.heappop(self._heap)[3]
                        self._active += 1
                        await due_send.send(job)
                        now = self.run.clock()
                    if self._intake_done and not self._heap and self._active == 0:
                        return
                    timeout = self._heap[0][0] - now if self._heap else math.inf
                    with anyio.move_on_after(timeout):
                        await self._wake.wait()

    async def _worker(self, due: MemoryObjectReceiveStream[Job]) -> None:
        async with due:
            async for job in due:
                try:
                    await self._poll(job)
                finally:
                    self._active -= 1
                    self._wake.set()

    async def _counted(self) -> None:
        if self.run.cfg.rpm_scope == "all":
            await self.run.limiter.acquire()

    async def _poll(self, job: Job) -> None:
        run = self.run
        assert job.request_id is not None
        await self._counted()
        job.polls += 1
        run.counts["polls"] += 1
        outcome = await run.client.status(job.request_id)
        now = run.clock()
        if isinstance(outcome, JobStatus):
            run.limiter.on_success()
            job.errors = 0
            if outcome.state == "COMPLETED":
                job.ready_s = self._learn(job, now, outcome.metrics)
                await self._fetch_result(job)
            elif outcome.state == "FAILED":
                self._fail(job, f"generation FAILED: {outcome.error or 'no reason given'}")
            elif now >= job.deadline_mono:
                # Still running at the end of its retention: its result could never be read.
                run.expire(job, "not finished before the end of its retention")
            else:
                job.last_poll_age = now - job.submitted_mono
                self.schedule(job, self.next_at(job, now))
            return
        self._handle_trouble(job, outcome, now)

    def _handle_trouble(self, job: Job, outcome: object, now: float) -> None:
        run = self.run
        if isinstance(outcome, Expired):
            run.expire(job, outcome.message)
        elif now >= job.deadline_mono and not isinstance(outcome, RunFatal):
            # Out of time and still no answer: polling on would only meet the 404.
            run.expire(job, f"no readable answer before the end of its retention ({getattr(outcome, 'message', '')})")
        elif isinstance(outcome, RateLimited):
            pause = run.limiter.on_rate_limited(outcome.reset_in)
            self.schedule(job, now + pause)
        elif isinstance(outcome, RunFatal):
            run.abort(outcome.message)
        elif isinstance(outcome, Retryable):
            job.errors += 1
            run.counts["retries"] += 1
            self.schedule(job, now + backoff_delay(job.errors - 1, base=run.cfg.backoff_base_s, cap=30.0))
        else:
            self._fail(job, f"unexpected answer {outcome!r}", retryable=True)

    def _learn(self, job: Job, now: float, metrics: dict) -> float:
        """Add this job's latency to the distribution; returns the sample.

        The service's own ``total_time`` is exact. Without it, the job finished somewhere between
        the previous poll and this one: the midpoint keeps the estimate from drifting upward with
        our own polling gaps (learning from upper bounds would feed on itself).
        """
        observed = now - job.submitted_mono
        total = metrics.get("total_time") if isinstance(metrics, dict) else None
        if isinstance(total, int | float) and not isinstance(total, bool) and 0 <= total <= observed + 1.0:
            sample = float(total)
        else:
            sample = (job.last_poll_age + observed) / 2 if job.last_poll_age > 0 else observed
        self.run.latencies.append(sample)
        self._learned += 1
        return sample

    async def _fetch_result(self, job: Job) -> None:
        run = self.run
        assert job.request_id is not None
        while True:
            await self._counted()
            outcome = await run.client.result(job.request_id)
            now = run.clock()
            if isinstance(outcome, JobResult):
                if outcome.state == "FAILED":
                    self._fail(job, f"generation FAILED: {outcome.error or 'no reason given'}")
                    return
                if outcome.state != "COMPLETED":
                    self.schedule(job, now + 0.05 * run.expected_latency())
                    return
                run.record(
                    "completed",
                    job.item.id,
                    request_id=job.request_id,
                    output_url=outcome.output_url,
                    cost_usd=outcome.cost_usd,
                    inference_time=outcome.inference_time,
                    latency_s=round(now - job.submitted_mono, 3),
                    ready_s=round(job.ready_s, 4) if job.ready_s is not None else None,
                )
                if not outcome.output_url:
                    self._fail(job, "the result names no image", retryable=False)
                    return
                job.output_url = outcome.output_url
                assert run.to_downloader is not None
                await run.to_downloader.send(job)
                return
            if isinstance(outcome, Retryable) and job.errors < 3 and now < job.deadline_mono:
                # The record is paid for: retry the fetch quickly rather than wait a poll cycle.
                job.errors += 1
                run.counts["retries"] += 1
                await anyio.sleep(backoff_delay(job.errors - 1, base=min(1.0, run.cfg.backoff_base_s)))
                continue
            if isinstance(outcome, RateLimited):
                pause = run.limiter.on_rate_limited(outcome.reset_in)
                # Go round the scheduler again: the status poll will send us back here.
                self.schedule(job, now + pause)
                return
            self._handle_trouble(job, outcome, now)
            return

    def _fail(self, job: Job, reason: str, retryable: bool = False) -> None:
        run = self.run
        run.record("failed", job.item.id, stage="generate", request_id=job.request_id, error=reason, retryable=retryable)
        run.counts["failed"] += 1
        run.finish(job)
