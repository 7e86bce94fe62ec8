"""A service whose answers never settle costs bounded requests per item, never a loop.

The case that once looped: the status says COMPLETED, the result never does (PROCESSING forever,
or a word nobody knows). Once the job's deadline had passed, every reschedule landed in the past
and the poller asked thousands of times a second. Here the scheduler is played by hand (the clock
jumps to each due poll) so a loop shows as a count of requests, not as time.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api.outcomes import Accepted, JobResult, JobStatus, Outcome, RateLimited, Retryable
from batchgen.engine.config import PollPolicy
from batchgen.engine.context import Job, Run
from batchgen.engine.poll import Poller
from batchgen.store.ledger import readable_events
from tests.engine.fakes import Clock, ClockedClient, FakeClient, events, item, kinds, make_run, run_clocked
from tests.support.sandbox import FakeClock

IT = item("a")
URL = "https://cdn.example/a.png"
POLL_LIMIT = 5000  # far above any bounded path; a loop reaches it


async def drive(tmp_path: Path, clock: FakeClock, client: FakeClient, *, deadline_in: float, **cfg: Any) -> Run:
    """One job in flight, polled whenever it is due (the clock jumps there) until it leaves the poller."""
    run = make_run(tmp_path, client, clock, [IT], expected_latency_s=1.0, **cfg)
    await run.admission.resume()
    now = clock()
    job = Job(item=IT, request_id="r-1", submitted_mono=now, deadline_mono=now + deadline_in)
    send, _recv = anyio.create_memory_object_stream[Job](math.inf)
    poller = Poller(run, to_downloader=send)
    poller.schedule(job, now)
    for _ in range(POLL_LIMIT):
        due = poller.scheduled()
        if not due:
            return run
        poller._heap.clear()
        at, job = due[0]
        clock.t = max(clock.t, at)
        await poller.poll(job)
    raise AssertionError(f"still polling after {POLL_LIMIT} polls ({len(client.calls)} requests)")


def requests(client: FakeClient) -> int:
    return client.count("status") + client.count("result")


@pytest.mark.parametrize("word", ["PROCESSING", "DONE-ISH"])
async def test_completed_but_never_a_result_fails_retryable_after_bounded_tries(
    tmp_path: Path, clock: FakeClock, word: str
) -> None:
    client = FakeClient(status=[JobStatus("COMPLETED")], result=[JobResult(word, None, None, None)])
    run = await drive(tmp_path, clock, client, deadline_in=3000.0)
    tries = PollPolicy().not_ready_tries
    assert client.count("status") == tries and client.count("result") == tries
    assert kinds(run, IT.id) == ["failed"]
    failed = events(run, IT.id)[0]
    assert failed["retryable"] is True and failed["stage"] == "poll" and failed["request_id"] == "r-1"
    assert failed["error"] == (
        f"the status says COMPLETED but the result says {word!r} {tries} times; the next run submits it again"
    )
    assert run.counters.failed == 1 and run.admission.in_flight == 0


async def test_a_result_that_lags_a_little_is_waited_for(tmp_path: Path, clock: FakeClock) -> None:
    not_yet = JobResult("PROCESSING", None, None, None)
    client = FakeClient(
        status=[JobStatus("COMPLETED")],
        result=[not_yet, not_yet, not_yet, JobResult("COMPLETED", URL, cost_usd=0.5, inference_time=1.0)],
    )
    run = await drive(tmp_path, clock, client, deadline_in=3000.0)
    assert client.count("result") == 4 and kinds(run, IT.id) == ["completed"]
    assert len(run.latencies) == 1  # the job's latency is learned once, not at every COMPLETED status


async def test_past_the_deadline_a_result_that_is_not_ready_ends_at_once(tmp_path: Path, clock: FakeClock) -> None:
    # A resumed job whose deadline has passed gets one poll, due now; it must not loop from there.
    client = FakeClient(status=[JobStatus("COMPLETED")], result=[JobResult("PROCESSING", None, None, None)])
    run = await drive(tmp_path, clock, client, deadline_in=0.0)
    assert requests(client) == 2
    failed = events(run, IT.id)[0]
    assert failed["event"] == "failed" and failed["retryable"] is True
    assert failed["error"] == (
        "the status says COMPLETED but the result says 'PROCESSING' until the end of its retention; "
        "the next run submits it again"
    )


async def test_a_rate_limited_result_past_the_deadline_does_not_loop(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(status=[JobStatus("COMPLETED")], result=[RateLimited(0.0, "HTTP 429: slow down")])
    run = await drive(tmp_path, clock, client, deadline_in=0.0)
    assert requests(client) == 2
    assert kinds(run, IT.id) == ["expired"]  # no readable answer before the deadline: submitted again


async def test_every_path_has_a_request_budget(tmp_path: Path, clock: FakeClock) -> None:
    # Errors forever and a deadline days away: the budget, not the deadline, ends it.
    client = FakeClient(status=[Retryable("HTTP 502: bad gateway", status=502)])
    run = await drive(tmp_path, clock, client, deadline_in=1e7, poll=PollPolicy(max_requests_per_job=40))
    assert client.count("status") == 40
    failed = events(run, IT.id)[0]
    assert failed["event"] == "failed" and failed["retryable"] is True and failed["stage"] == "poll"
    assert failed["error"] == (
        "no usable answer after 40 requests (last: HTTP 502: bad gateway); the next run submits it again"
    )


async def test_a_job_still_running_is_bounded_by_the_budget_too(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(status=[JobStatus("PROCESSING")])
    run = await drive(tmp_path, clock, client, deadline_in=1e7, poll=PollPolicy(max_requests_per_job=25))
    assert client.count("status") == 25
    assert "(last: status PROCESSING)" in events(run, IT.id)[0]["error"]


async def test_rate_limit_answers_do_not_spend_the_budget(tmp_path: Path, clock: FakeClock) -> None:
    limited: list[Outcome] = [RateLimited(0.0, "HTTP 429")] * 30
    client = FakeClient(
        status=[*limited, JobStatus("COMPLETED")],
        result=[JobResult("COMPLETED", URL, cost_usd=0.5, inference_time=1.0)],
    )
    run = await drive(tmp_path, clock, client, deadline_in=1e7, poll=PollPolicy(max_requests_per_job=10))
    assert client.count("status") == 31 and kinds(run, IT.id) == ["completed"]


async def test_a_whole_run_ends_with_the_item_failed_retryable(tmp_path: Path) -> None:
    client = ClockedClient(
        Clock(), submit=[Accepted("r-1")], status=[JobStatus("COMPLETED")], result=[JobResult("PROCESSING", None, None, None)]
    )
    # Neither the tries nor the budget: the deadline ends it. Small gaps, as the poller waits them for real.
    policy = replace(PollPolicy(), not_ready_tries=1000, max_gap_s=0.01)
    outcome = await run_clocked(tmp_path, client, [IT], retention_s=60.0, poll=policy)
    assert outcome.exit_code == 1 and outcome.counts["failed_retryable"] == 1
    assert requests(client) < 60  # a second each, in a 60-second retention
    failed = [ev for ev in readable_events(tmp_path / "ledger.jsonl") if ev["event"] == "failed"]
    assert len(failed) == 1 and "until the end of its retention" in failed[0]["error"]
