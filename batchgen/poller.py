"""The poller: one scheduler over every in-flight request_id.

Jobs sit in a heap ordered by when they should next be polled, ties broken by retention deadline
(earliest deadline first). The first poll of a job is placed near the completion time learned from
the latencies seen so far, later ones at rising quantiles, then backing off; no poll is ever
scheduled past the job's deadline, so no id reaches the end of its retention unread. A COMPLETED
status goes straight to the result fetch and the job on to the downloader.
"""

from __future__ import annotations

import heapq
import itertools
import math

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from batchgen.client import Expired, JobResult, JobStatus, RateLimited, Retryable, RunFatal
from batchgen.limits import backoff_delay
from batchgen.pipeline import Job, Run

__all__ = ["Poller", "next_poll_at"]

QUANTILES = (0.5, 0.75, 0.9, 0.97)
COLD_FIRST_POLL_S = 0.5  # with nothing learned yet: 0.5 s, then doubling
MAX_GAP_S = 30.0


def _quantile(sorted_samples: list[float], q: float) -> float:
    return sorted_samples[min(len(sorted_samples) - 1, int(q * (len(sorted_samples) - 1) + 0.5))]


def next_poll_at(job: Job, now: float, samples: list[float], default_latency: float) -> float:
    """When to poll ``job`` next, from the latency distribution seen so far (pure, for tests).

    With samples, polls go to rising quantiles of the distribution (about 1.9 status polls per
    image for a log-normal spread of 0.35), then back off from a fraction of the median. With
    none, a geometric ladder from 0.5 s finds any latency within a factor of two in a few polls;
    the first results seed the distribution and, through the ledger, the next run's.
    """
    age = now - job.submitted_mono
    if len(samples) >= 3:
        s = sorted(samples)
        median = _quantile(s, 0.5)
        min_gap = max(0.02, 0.03 * median)
        if job.polls < len(QUANTILES):
            for q in QUANTILES[job.polls :]:
                target = _quantile(s, q)
                if target > age + min_gap:
                    return job.submitted_mono + target
        beyond = min(40, max(0, job.polls - len(QUANTILES)))
        gap = min(MAX_GAP_S, max(min_gap, 0.1 * median * 1.5**beyond))
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
        self._slots = anyio.Semaphore(max(1, run.cfg.poll_workers))

    def schedule(self, job: Job, at: float) -> None:
        at = min(at, job.deadline_mono)
        heapq.heappush(self._heap, (at, job.deadline_mono, next(self._seq), job))
        self._wake.set()

    def first_poll(self, job: Job) -> None:
        self.schedule(job, next_poll_at(job, self.run.clock(), list(self.run.latencies), self.run.cfg.expected_latency_s))

    async def _intake(self, inbox: MemoryObjectReceiveStream[Job]) -> None:
        async with inbox:
            async for job in inbox:
                self.first_poll(job)
        self._intake_done = True
        self._wake.set()

    async def serve(self, inbox: MemoryObjectReceiveStream[Job]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._intake, inbox)
            while True:
                self._wake = anyio.Event()
                now = self.run.clock()
                while self._heap and self._heap[0][0] <= now:
                    job = heapq.heappop(self._heap)[3]
                    await self._slots.acquire()
                    self._active += 1
                    tg.start_soon(self._poll_one, job, tg)
                    now = self.run.clock()
                if self._intake_done and not self._heap and self._active == 0:
                    return
                timeout = self._heap[0][0] - now if self._heap else math.inf
                with anyio.move_on_after(timeout):
                    await self._wake.wait()

    async def _poll_one(self, job: Job, tg: TaskGroup) -> None:
        try:
            await self._poll(job)
        finally:
            self._active -= 1
            self._slots.release()
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
                self.schedule(job, next_poll_at(job, now, list(run.latencies), run.cfg.expected_latency_s))
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
