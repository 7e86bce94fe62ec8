"""The poller: one scheduler holding every in-flight request_id, and a fixed pool of workers.

Jobs sit in a heap ordered by when they should next be looked at, ties broken by retention
deadline (earliest deadline first). When a job comes up, the schedule (schedule.py) is asked
again with what is known now: if it says "later" (a first wave still learning its latencies, or
an estimate that moved), the job goes back into the heap without a request. Polls go to rising
quantiles of the latency distribution (latency.py estimates it from finished jobs and from jobs
seen still running), then back off; no poll is ever scheduled past the job's deadline, so no id
reaches the end of its retention unread. A COMPLETED status goes straight to the result fetch
and the job on to the downloader.
Every path obeys the deadline and a per-job request budget (``PollPolicy.max_requests_per_job``):
a service whose answers never settle (COMPLETED, but a result that never is) fails the item,
retryable, in bounded requests.

Which quantiles depends on what a poll costs: sparse when polls count against a known rate
limit, about 1.5 polls per image when nothing says (the default), dense when ``--rpm-scope
submit`` says they are free; see BENCHMARKS.md and ``benchmarks/ladder_sim.py``. The ladders, the
cold start and the widest gap are ``PollPolicy``'s (config.py); ``RetryPolicy`` says how a poll
or a result fetch that met trouble is retried.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import assert_never

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchgen.api.outcomes import (
    Accepted,
    Credits,
    Expired,
    ItemFatal,
    JobResult,
    JobStatus,
    Outcome,
    RateLimited,
    Retryable,
    RunFatal,
    Trouble,
)
from batchgen.engine.config import Ladder
from batchgen.engine.context import Job, Run
from batchgen.engine.latency import Estimate, LatencyEstimator
from batchgen.engine.schedule import BALANCED, ECONOMY, PROMPT, due_at, next_poll_at, settled
from batchgen.engine.waiting import wait_event
from batchgen.store.events import EventKind

# The ladders and the schedule live in schedule.py; re-exported for benchmarks/ladder_sim.py.
__all__ = ["BALANCED", "ECONOMY", "PROMPT", "Poller", "next_poll_at"]


class Poller:
    """Schedules and runs every status poll of a run; a completed job goes on to ``to_downloader``."""

    def __init__(self, run: Run, to_downloader: MemoryObjectSendStream[Job]) -> None:
        self.run = run
        self.policy = run.cfg.poll.for_scope(run.cfg.rpm_scope)
        self.to_downloader = to_downloader
        self._heap: list[tuple[float, float, int, Job]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._active = 0
        self._intake_done = False
        self._ladder_seen: Ladder | None = None
        # Seeded from earlier runs' results; every job this poller sees joins it (latency.py).
        self.estimator = LatencyEstimator(run.latencies, window=max(256, 2 * run.cfg.concurrency),
                                          spread_prior=self.policy.spread_prior,
                                          precise=lambda est: settled(est, self.policy))

    def ladder(self) -> Ladder:
        """Dense when polls are free, sparse when they eat into a known rate limit, denser again in
        a rate-limited run's tail when the limit leaves requests to spare (``PollPolicy.ladder_for``)."""
        run = self.run
        rpm = run.limiter.current_rpm
        spare = None
        if rpm is not None and run.cfg.rpm_scope == "all" and not run.admission.waiting():
            est = self.estimate()
            if est.n_exact >= self.policy.trust_samples:
                jobs = max(1, run.admission.in_flight)
                spare = est.quantile(0.5) * rpm * len(run.keys.slots) / 60.0 / jobs
        return self.policy.ladder_for(run.cfg.rpm_scope, rpm is not None, spare)

    def _replan(self, now: float) -> None:
        """The ladder became denser (a tail with requests to spare): jobs waiting for a sparser
        rung are looked at again now, each moved earlier if the new ladder says so."""
        ladder = self.ladder()
        previous, self._ladder_seen = self._ladder_seen, ladder
        if previous is None or ladder is previous or len(ladder[0]) <= len(previous[0]):
            return
        moved = False
        for i, (at, deadline, seq, job) in enumerate(self._heap):
            if at > now and (sooner := max(self.due(job, now), now)) < at:
                self._heap[i] = (sooner, deadline, seq, job)
                moved = True
        if moved:
            heapq.heapify(self._heap)

    def samples(self) -> list[float]:
        """The learned latencies, sorted (diagnostics; the schedule reads ``estimate()``)."""
        return sorted(self.run.latencies)

    def estimate(self) -> Estimate:
        """What the latencies seen so far (finished or still running) say; rebuilt only after changes."""
        return self.estimator.estimate(self.run.clock(), lambda: (entry[3] for entry in self._heap))

    def next_at(self, job: Job, now: float) -> float:
        """After intake or a poll that found ``job`` running: when to look at it next."""
        self.estimator.track(job)
        self.estimator.changed()
        return next_poll_at(job, now, self.estimate(), self.ladder(), self.policy, self.run.cfg.expected_latency_s)

    def due(self, job: Job, now: float) -> float:
        """When ``job`` is due, asked again when it comes up: later if what is known moved it."""
        return due_at(job, now, self.estimate(), self.ladder(), self.policy, self.run.cfg.expected_latency_s)

    def schedule(self, job: Job, at: float) -> None:
        at = min(at, job.deadline_mono)
        heapq.heappush(self._heap, (at, job.deadline_mono, next(self._seq), job))
        self._wake.set()

    def scheduled(self) -> list[tuple[float, Job]]:
        """Jobs waiting for their next poll, soonest first (for tests and diagnostics)."""
        return [(at, job) for at, _, _, job in sorted(self._heap, key=lambda e: e[:3])]

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
        workers = max(1, self.policy.workers)
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
                    self._replan(now)
                    while self._heap and self._heap[0][0] <= now:
                        job = heapq.heappop(self._heap)[3]
                        if (at := self.due(job, now)) > now:  # not yet: waiting costs no request
                            self.schedule(job, at)
                            continue
                        self._active += 1
                        await due_send.send(job)
                        now = self.run.clock()
                    if self._intake_done and not self._heap and self._active == 0:
                        return
                    timeout = self._heap[0][0] - now if self._heap else math.inf
                    await wait_event(self._wake, timeout)

    async def _worker(self, due: MemoryObjectReceiveStream[Job]) -> None:
        async with due:
            async for job in due:
                try:
                    await self.poll(job)
                finally:
                    self._active -= 1
                    self._wake.set()

    async def _counted(self, job: Job) -> None:
        if self.run.cfg.rpm_scope == "all":
            await self.run.key_of(job).limiter.acquire()

    async def poll(self, job: Job) -> None:
        """Ask about ``job`` once; reschedule it, or send it on (result fetch, downloader), or let it go."""
        run = self.run
        assert job.request_id is not None
        if run.unreadable(job):
            return  # its key was refused: no other key may read it (keys.py)
        await self._counted(job)
        job.polls += 1
        run.on_poll()
        outcome = await self._ask(job, run.key_of(job).client.status)
        now = run.clock()
        match outcome:
            case JobStatus():
                run.key_of(job).limiter.on_success()
                job.errors = 0
                await self._on_status(job, outcome, now)
            case RateLimited() | Retryable() | ItemFatal() | RunFatal() | Expired():
                self.on_trouble(job, outcome, now)
            case Accepted() | JobResult() | Credits():
                self._fail(job, f"unexpected answer {outcome!r}", retryable=True)
            case _:
                assert_never(outcome)

    async def _ask(self, job: Job, call: Callable[[str], Awaitable[Outcome]]) -> Outcome:
        """One keyed request about ``job``: counted against its budget (a 429 says nothing about the
        job and the limiter paces those) and reported to the breaker."""
        assert job.request_id is not None
        outcome = await call(job.request_id)
        self.run.breaker.heard(outcome)
        if not isinstance(outcome, RateLimited):
            job.requests += 1
        return outcome

    def _again(self, job: Job, at: float, last: str) -> None:
        """Ask about ``job`` again at ``at``, unless it has had its share of requests in this run.

        Every path that keeps a job in the poller comes through here, so a service that never
        answers sensibly costs a bounded number of requests per item, never a loop. (The deadline
        is each path's own check before this: what a missed deadline means differs.)
        """
        if job.requests >= self.policy.max_requests_per_job:
            self.run.on_failed(job, "poll", f"no usable answer after {job.requests} requests (last: {last}); "
                               "the next run submits it again", retryable=True)
            self._left()
            return
        self.schedule(job, at)

    async def _on_status(self, job: Job, status: JobStatus, now: float) -> None:
        if status.state == "COMPLETED":
            if job.ready_s is None:  # once per job, though a result that lags brings it back here
                job.ready_s = self._learn(job, now, status.metrics)
            await self._fetch_result(job)
        elif status.state == "FAILED":
            self._fail(job, f"generation FAILED: {status.error or 'no reason given'}")
        elif now >= job.deadline_mono:
            # Still running at the end of its retention: its result could never be read.
            self.run.on_expired(job, "not finished before the end of its retention")
            self._left()
        else:
            job.last_poll_age = now - job.submitted_mono
            self._again(job, self.next_at(job, now), f"status {status.state}")

    def on_trouble(self, job: Job, outcome: Trouble, now: float) -> None:
        """Any answer but a status or a result: ask again later, submit again, or stop the run."""
        run = self.run
        match outcome:
            case Expired():
                run.on_expired(job, outcome.message)
                self._left()
            case RunFatal():
                run.on_fatal(job, outcome)
                self._left()
            case _ if now >= job.deadline_mono:
                # Out of time and still no answer: polling on would only meet the 404.
                run.on_expired(job, f"no readable answer before the end of its retention ({outcome.message})")
                self._left()
            case RateLimited():
                pause = run.key_of(job).limiter.on_rate_limited(outcome.reset_in)
                self._again(job, now + pause, outcome.message)
            case Retryable():
                job.errors += 1
                run.on_retry()
                self._again(job, now + run.cfg.retry.poll_delay(job.errors), outcome.message)
            case ItemFatal():
                self._fail(job, f"unexpected answer {outcome!r}", retryable=True)
            case _:
                assert_never(outcome)

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
        job.ready_s = sample
        self.estimator.changed()
        return sample

    async def _fetch_result(self, job: Job) -> None:
        run = self.run
        retry = run.cfg.retry
        assert job.request_id is not None
        while True:
            await self._counted(job)
            outcome = await self._ask(job, run.key_of(job).client.result)
            now = run.clock()
            match outcome:
                case JobResult():
                    await self._on_result(job, outcome, now)
                    return
                case Retryable() if job.errors < retry.fetch_retries and now < job.deadline_mono:
                    # The record is paid for: retry the fetch quickly rather than wait a poll cycle.
                    job.errors += 1
                    run.on_retry()
                    await anyio.sleep(retry.fetch_delay(job.errors))
                    continue
                case RateLimited() | Retryable() | ItemFatal() | RunFatal() | Expired():
                    # A 429 goes round the scheduler again: the status poll sends us back here.
                    self.on_trouble(job, outcome, now)
                    return
                case Accepted() | JobStatus() | Credits():
                    self._fail(job, f"unexpected answer {outcome!r}", retryable=True)
                    return
                case _:
                    assert_never(outcome)

    async def _on_result(self, job: Job, result: JobResult, now: float) -> None:
        run = self.run
        if result.state == "FAILED":
            self._fail(job, f"generation FAILED: {result.error or 'no reason given'}")
            return
        if result.state != "COMPLETED":
            self._not_ready(job, result.state, now)
            return
        run.record(EventKind.COMPLETED,
            job.item.id,
            request_id=job.request_id,
            output_url=result.output_url,
            cost_usd=result.cost_usd,
            inference_time=result.inference_time,
            latency_s=round(now - job.submitted_mono, 3),
            ready_s=round(job.ready_s, 4) if job.ready_s is not None else None,
        )
        if not result.output_url:
            self._fail(job, "the result names no image", retryable=False)
            return
        job.output_url = result.output_url
        await self.to_downloader.send(job)

    def _not_ready(self, job: Job, state: str, now: float) -> None:
        """The status said COMPLETED, the result says otherwise: it may lag a moment, or never come.

        Asked again after a doubling wait, a bounded number of times and never past the deadline;
        then the item fails (retryable) rather than being asked about forever.
        """
        job.not_ready += 1
        said = f"the status says COMPLETED but the result says {state[:40]!r}"
        policy = self.policy
        if now >= job.deadline_mono or job.not_ready >= policy.not_ready_tries:
            until = "until the end of its retention" if now >= job.deadline_mono else f"{job.not_ready} times"
            self.run.on_failed(job, "poll", f"{said} {until}; the next run submits it again", retryable=True)
            self._left()
            return
        wait = policy.not_ready_retry * self.run.expected_latency() * 2.0 ** (job.not_ready - 1)
        self._again(job, now + min(policy.max_gap_s, wait), said)

    def _fail(self, job: Job, reason: str, retryable: bool = False) -> None:
        self.run.on_failed(job, "generate", reason, retryable=retryable)
        self._left()

    def _left(self) -> None:
        """A job left the poller unfinished: the wave's ranks move up, and a job that was only
        waiting for the scouts may be a scout itself now. Without a rebuild of the estimate it
        would keep waiting for jobs that are gone (a resumed wave whose records all expired)."""
        self.estimator.changed()
