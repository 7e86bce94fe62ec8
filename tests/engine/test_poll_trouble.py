"""The poller's handling of every answer: ask again, fetch and hand on, submit again, fail, or stop.

A job here is in flight (it holds a slot) with a request_id; each test gives the poller one
answer and checks the ledger, the counters, the job's next poll and where its slot went.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from batchgen.api.outcomes import (
    Accepted,
    Expired,
    ItemFatal,
    JobResult,
    JobStatus,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.engine.config import PollPolicy, RetryPolicy
from batchgen.engine.context import Job, Run
from batchgen.engine.poll import Poller
from tests.engine.fakes import NO_WAIT, FakeClient, events, item, kinds, make_run
from tests.support.sandbox import FakeClock

IT = item("a")
URL = "https://cdn.example/a.png"


class Rig:
    """One run, one poller, one job in flight; ``downloads`` receives what the poller hands on."""

    def __init__(self, run: Run, poller: Poller, job: Job, downloads: MemoryObjectReceiveStream[Job]) -> None:
        self.run, self.poller, self.job, self.downloads = run, poller, job, downloads

    def next_poll(self) -> float | None:
        """When the job is asked about next (None: it left the poller), forgetting earlier entries."""
        entries = self.poller.scheduled()
        self.poller._heap.clear()
        return entries[-1][0] if entries else None

    def handed_on(self) -> list[Job]:
        out = []
        while True:
            try:
                out.append(self.downloads.receive_nowait())
            except anyio.WouldBlock:
                return out

    def slot_free(self) -> bool:
        adm = self.run.admission
        return adm.in_flight == 0 and adm.slots.value == self.run.cfg.concurrency


async def rig(
    tmp_path: Path, clock: FakeClock, *, deadline_in: float = 1000.0, client: FakeClient | None = None, **cfg: Any
) -> Rig:
    run = make_run(tmp_path, client or FakeClient(), clock, [IT], **cfg)
    await run.admission.resume()
    now = clock()
    job = Job(item=IT, request_id="r-1", submitted_mono=now, deadline_mono=now + deadline_in)
    send, recv = anyio.create_memory_object_stream[Job](math.inf)
    return Rig(run, Poller(run, to_downloader=send), job, recv)


# ---- trouble: answers that are neither a status nor a result ---------------------------------


async def test_expired_record_is_submitted_again(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock)
    r.poller.on_trouble(r.job, Expired("no such request"), clock())
    assert kinds(r.run) == ["expired"]
    assert events(r.run)[0]["error"] == "no such request" and events(r.run)[0]["request_id"] == "r-1"
    assert list(r.run.admission.resubmit) == [IT]
    assert r.run.counters.expired_resubmits == 1 and r.slot_free() and r.next_poll() is None


async def test_expired_too_often_fails_for_good(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, retry=replace(NO_WAIT, max_expiries=1))
    r.run.record("expired", IT.id, request_id="r-0")  # an earlier run already paid for one unread
    r.poller.on_trouble(r.job, Expired("no such request"), clock())
    assert kinds(r.run) == ["expired", "expired", "failed"]
    failed = events(r.run)[-1]
    assert failed["stage"] == "poll" and failed["retryable"] is False
    assert failed["error"].startswith("expired unread 2 times")
    assert not r.run.admission.resubmit and r.run.counters.failed == 1 and r.slot_free()


@pytest.mark.parametrize(
    "answer", [Retryable("HTTP 503", status=503), RateLimited(5.0, "slow down")], ids=["retryable", "rate-limited"]
)
async def test_no_answer_by_the_deadline_counts_as_expired(tmp_path: Path, clock: FakeClock, answer: Any) -> None:
    r = await rig(tmp_path, clock, deadline_in=10.0)
    clock.advance(10.0)
    r.poller.on_trouble(r.job, answer, clock())
    assert kinds(r.run) == ["expired"]
    assert events(r.run)[0]["error"] == f"no readable answer before the end of its retention ({answer.message})"
    assert list(r.run.admission.resubmit) == [IT] and r.next_poll() is None


async def test_a_fatal_answer_aborts_even_past_the_deadline(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, deadline_in=10.0)
    clock.advance(20.0)
    r.poller.on_trouble(r.job, RunFatal("auth", "the API key was refused", 401), clock())
    assert r.run.stop.abort_reason == "the API key was refused"
    assert kinds(r.run) == []  # its request_id is in the ledger: the next run polls it
    assert r.next_poll() is None


async def test_rate_limited_pauses_and_asks_again_after_the_reset(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, retry=RetryPolicy())
    now = clock()
    r.poller.on_trouble(r.job, RateLimited(5.0, "slow down"), now)
    at = r.next_poll()
    assert at is not None and now + 5.0 <= at <= now + 5.25
    assert r.run.limiter.rate_limited == 1 and kinds(r.run) == [] and not r.slot_free()


async def test_retryable_backs_off_growing_and_capped(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, deadline_in=10_000.0, retry=RetryPolicy(backoff_base_s=1.0, poll_backoff_cap_s=30.0))
    gaps = []
    for _ in range(10):
        now = clock()
        r.poller.on_trouble(r.job, Retryable("HTTP 502", status=502), now)
        at = r.next_poll()
        assert at is not None
        gaps.append(at - now)
    for attempt, gap in enumerate(gaps[:4]):
        assert 0.5 * 2**attempt <= gap <= 2**attempt  # full jitter: between half and all of 1, 2, 4, 8 s
    assert all(gap <= 30.0 for gap in gaps) and gaps[-1] >= 15.0
    assert r.job.errors == 10 and r.run.counters.retries == 10 and kinds(r.run) == []


async def test_a_retry_is_never_scheduled_past_the_deadline(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, deadline_in=0.3, retry=RetryPolicy(backoff_base_s=5.0))
    r.poller.on_trouble(r.job, Retryable("HTTP 502", status=502), clock())
    assert r.next_poll() == r.job.deadline_mono


async def test_an_item_refusal_on_a_poll_fails_the_item_retryable(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock)
    r.poller.on_trouble(r.job, ItemFatal("bad request", 400), clock())
    failed = events(r.run)[-1]
    assert failed["event"] == "failed" and failed["stage"] == "generate" and failed["retryable"] is True
    assert "unexpected answer" in failed["error"] and r.slot_free()


# ---- a whole poll: status, then result, then the downloader -----------------------------------


async def test_still_running_is_asked_again_later(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, client=FakeClient(status=[JobStatus("PROCESSING")]))
    clock.advance(2.0)
    await r.poller.poll(r.job)
    at = r.next_poll()
    assert at is not None and at > clock()
    assert r.job.polls == 1 and r.job.last_poll_age == 2.0 and r.run.counters.polls == 1
    assert kinds(r.run) == []


async def test_still_running_at_the_deadline_is_expired(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, deadline_in=5.0, client=FakeClient(status=[JobStatus("PROCESSING")]))
    clock.advance(5.0)
    await r.poller.poll(r.job)
    assert kinds(r.run) == ["expired"]
    assert events(r.run)[0]["error"] == "not finished before the end of its retention"


async def test_generation_failed_fails_the_item_for_good(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, client=FakeClient(status=[JobStatus("FAILED", error="nsfw")]))
    await r.poller.poll(r.job)
    failed = events(r.run)[-1]
    assert (failed["event"], failed["stage"], failed["retryable"]) == ("failed", "generate", False)
    assert failed["error"] == "generation FAILED: nsfw" and r.slot_free()


async def test_completed_is_fetched_recorded_and_handed_to_the_downloader(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(
        status=[JobStatus("COMPLETED", metrics={"total_time": 3.0})],
        result=[JobResult("COMPLETED", URL, cost_usd=0.02, inference_time=2.5)],
    )
    r = await rig(tmp_path, clock, client=client)
    clock.advance(4.0)
    await r.poller.poll(r.job)
    completed = events(r.run)[-1]
    assert completed["event"] == "completed" and completed["output_url"] == URL and completed["cost_usd"] == 0.02
    assert completed["latency_s"] == 4.0 and completed["ready_s"] == 3.0
    assert [j.output_url for j in r.handed_on()] == [URL]
    assert list(r.run.latencies) == [3.0]  # the service's own time, not our polling gap
    assert not r.slot_free()  # the downloader frees it


async def test_a_lost_result_is_fetched_again_at_once(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(
        status=[JobStatus("COMPLETED")],
        result=[Retryable("timeout"), JobResult("COMPLETED", URL, cost_usd=None, inference_time=None)],
    )
    r = await rig(tmp_path, clock, client=client)
    await r.poller.poll(r.job)
    assert client.count("result") == 2 and client.count("status") == 1
    assert r.run.counters.retries == 1 and len(r.handed_on()) == 1


async def test_a_result_without_an_image_is_paid_but_failed(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(status=[JobStatus("COMPLETED")], result=[JobResult("COMPLETED", None, 0.02, 1.0)])
    r = await rig(tmp_path, clock, client=client)
    await r.poller.poll(r.job)
    assert kinds(r.run) == ["completed", "failed"]
    assert events(r.run)[-1]["error"] == "the result names no image" and r.handed_on() == []


async def test_rate_limited_result_goes_round_the_scheduler(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(status=[JobStatus("COMPLETED")], result=[RateLimited(2.0, "slow down")])
    r = await rig(tmp_path, clock, client=client, retry=RetryPolicy())
    now = clock()
    await r.poller.poll(r.job)
    at = r.next_poll()
    assert at is not None and at >= now + 2.0
    assert kinds(r.run) == [] and r.handed_on() == []


async def test_a_submit_answer_to_a_poll_fails_the_item_retryable(tmp_path: Path, clock: FakeClock) -> None:
    r = await rig(tmp_path, clock, client=FakeClient(status=[Accepted("r-9")]))
    await r.poller.poll(r.job)
    assert events(r.run)[-1]["retryable"] is True and "unexpected answer" in events(r.run)[-1]["error"]


# ---- a job that leaves unfinished makes room in the first wave --------------------------------


async def test_scouts_that_expire_hand_the_probing_to_the_jobs_that_waited(tmp_path: Path, clock: FakeClock) -> None:
    """A resumed wave whose records expired: the scouts meet 404s and leave for the history. The
    jobs that only waited for them must become scouts, or they would wait for nobody, for ever."""
    scouts = PollPolicy().scouts
    items = [item(i) for i in range(scouts + 2)]
    run = make_run(tmp_path, FakeClient(), clock, items)
    send, _recv = anyio.create_memory_object_stream[Job](math.inf)
    poller = Poller(run, to_downloader=send)
    start = clock()
    jobs = []
    for i, it in enumerate(items):
        await run.admission.resume()
        jobs.append(Job(item=it, request_id=f"r-{i}", submitted_mono=start + i * 0.001, deadline_mono=start + 3600))
    clock.advance(0.01)
    for j in jobs:
        poller.first_poll(j)
    clock.advance(1.0)
    assert len(poller.estimate().older) == len(jobs)  # the serve loop's rebuild: every job counted
    waiting = jobs[scouts:]
    assert all(poller.due(j, clock()) > clock() for j in waiting)  # not scouts: they only look, later

    poller._heap.clear()
    for j in jobs[:scouts]:
        poller.on_trouble(j, Expired("no such request"), clock())
    for j in waiting:
        poller.schedule(j, clock())
    clock.advance(1.0)
    assert poller.estimate().older == tuple(j.submitted_mono for j in waiting)
    assert poller.due(waiting[0], clock()) <= clock()  # the oldest one left probes now
