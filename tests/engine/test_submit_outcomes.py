"""The submitter's outcome table: what each answer to a submit writes, counts, and does to the run.

Every row drives ``submit_one`` over a scripted client and checks the three things that matter:
the ledger lines a later run replays, the counters the summary shows, and where the item went
(to the poller, back to pending, failed) or what became of the run (stopped, aborted).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api.outcomes import Accepted, Expired, ItemFatal, JobStatus, RateLimited, Retryable, RunFatal
from batchgen.engine.context import Job, Run
from batchgen.engine.submit import submit_one
from tests.engine.fakes import NO_WAIT, FakeClient, events, item, kinds, make_run
from tests.support.sandbox import FakeClock

IT = item("a")


async def submit(tmp_path: Path, clock: FakeClock, *answers: Any, **cfg: Any) -> tuple[Run, list[Job]]:
    """Admit one item, submit it until it settles; returns the run and what reached the poller."""
    run = make_run(tmp_path, FakeClient(submit=answers), clock, [IT], **cfg)
    run.admission.queue(resubmit=[], fresh=[IT])
    admitted = await run.admission.next_submission()
    assert admitted == IT
    send, recv = anyio.create_memory_object_stream[Job](math.inf)
    async with send, recv:
        await submit_one(run, admitted, send)
        sent = []
        while True:
            try:
                sent.append(recv.receive_nowait())
            except anyio.WouldBlock:
                break
    return run, sent


def slot_free(run: Run) -> bool:
    adm = run.admission
    return adm.submitting == 0 and adm.in_flight == 0 and adm.slots.value == run.cfg.concurrency


async def test_accepted_goes_to_the_poller_in_flight_with_its_deadline(tmp_path: Path, clock: FakeClock) -> None:
    run, sent = await submit(tmp_path, clock, Accepted("r-1"), retention_s=1000.0)
    assert kinds(run) == ["intent", "submitted"]
    assert events(run)[1]["request_id"] == "r-1"
    assert [j.request_id for j in sent] == ["r-1"]
    assert sent[0].submitted_mono == clock() and sent[0].deadline_mono == clock() + 1000.0 - 50.0
    assert run.counters.submitted == 1 and run.counters.failed == 0
    assert run.admission.in_flight == 1 and run.admission.submitting == 0  # it keeps its slot


async def test_the_intent_carries_the_parameters_and_their_hash(tmp_path: Path, clock: FakeClock) -> None:
    run, _ = await submit(tmp_path, clock, Accepted("r-1"))
    intent = events(run)[0]
    assert intent["params"] == dict(IT.params) and intent["attempt"] == 1 and len(intent["params_sha"]) == 16


async def test_rate_limited_pauses_the_run_and_tries_again(tmp_path: Path, clock: FakeClock) -> None:
    run, sent = await submit(tmp_path, clock, RateLimited(3.0, "slow down"), Accepted("r-1"))
    assert kinds(run) == ["intent", "submit_retry", "intent", "submitted"]
    retry = events(run)[1]
    assert retry["status"] == 429 and retry["error"] == "slow down" and "uncertain" not in retry
    assert run.limiter.rate_limited == 1
    assert run.counters.retries == 0  # a refusal is not a lost answer: nothing may have been paid
    assert len(sent) == 1


async def test_item_fatal_fails_the_item_for_good_and_frees_its_slot(tmp_path: Path, clock: FakeClock) -> None:
    run, sent = await submit(tmp_path, clock, ItemFatal("prompt refused", 400))
    assert kinds(run) == ["intent", "failed"]
    failed = events(run)[1]
    assert failed["stage"] == "submit" and failed["status"] == 400 and failed["retryable"] is False
    assert failed["error"] == "prompt refused"
    assert run.counters.failed == 1 and sent == [] and slot_free(run)
    assert run.stop.stop_reason is None


@pytest.mark.parametrize("kind", ["credits", "spend_limit"])
async def test_money_running_out_stops_submitting_but_lets_in_flight_work_finish(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    run, sent = await submit(tmp_path, clock, RunFatal(kind, "insufficient credits", 402))
    assert kinds(run) == ["intent", "submit_retry"]  # not sent for good: the next run tries again
    assert run.stop.stop_reason == "insufficient credits" and run.stop.abort_reason is None
    assert run.counters.failed == 0 and sent == [] and slot_free(run)


@pytest.mark.parametrize("kind", ["auth", "forbidden", "retired", "protocol"])
async def test_a_fatal_answer_aborts_the_run(tmp_path: Path, clock: FakeClock, kind: str) -> None:
    run, sent = await submit(tmp_path, clock, RunFatal(kind, "the API key was refused", 401))
    assert kinds(run) == ["intent", "submit_retry"]
    assert run.stop.abort_reason == "the API key was refused"
    assert run.stop.stop_reason == "the API key was refused"
    assert run.counters.failed == 0 and sent == [] and slot_free(run)


async def test_a_lost_answer_is_retried_and_counted_as_a_possible_double_charge(
    tmp_path: Path, clock: FakeClock
) -> None:
    run, sent = await submit(tmp_path, clock, Retryable("connection dropped"), Accepted("r-1"))
    assert kinds(run) == ["intent", "submit_retry", "intent", "submitted"]
    assert events(run)[1]["uncertain"] is True
    assert events(run)[2]["attempt"] == 2
    assert run.counters.retries == 1 and run.counters.possible_double_charges == 1
    assert len(sent) == 1


@pytest.mark.parametrize(
    "answer",
    [Retryable("cannot connect", sent=False), Retryable("HTTP 503", status=503)],
    ids=["never-sent", "server-error"],
)
async def test_a_refusal_that_cannot_have_been_billed_is_not_uncertain(
    tmp_path: Path, clock: FakeClock, answer: Retryable
) -> None:
    run, _ = await submit(tmp_path, clock, answer, Accepted("r-1"))
    assert "uncertain" not in events(run)[1]
    assert run.counters.retries == 1 and run.counters.possible_double_charges == 0


async def test_a_2xx_without_a_usable_request_id_is_uncertain(tmp_path: Path, clock: FakeClock) -> None:
    run, _ = await submit(tmp_path, clock, Retryable("HTTP 200: unusable request_id", status=200), Accepted("r-1"))
    assert events(run)[1]["uncertain"] is True
    assert run.counters.possible_double_charges == 1


async def test_retries_run_out_and_the_item_fails_retryable_for_the_next_run(tmp_path: Path, clock: FakeClock) -> None:
    run, sent = await submit(tmp_path, clock, Retryable("HTTP 502", status=502), retry=replace(NO_WAIT, submit_retries=2))
    assert kinds(run) == ["intent", "submit_retry", "intent", "submit_retry", "intent", "failed"]
    failed = events(run)[-1]
    assert failed["retryable"] is True and failed["stage"] == "submit" and failed["status"] == 502
    assert "gave up after 3 tries" in failed["error"]
    assert run.counters.retries == 3 and run.counters.failed == 1
    assert sent == [] and slot_free(run)


@pytest.mark.parametrize("answer", [JobStatus("COMPLETED"), Expired("gone")], ids=["status", "expired"])
async def test_an_answer_that_makes_no_sense_for_a_submit_fails_the_item_retryable(
    tmp_path: Path, clock: FakeClock, answer: Any
) -> None:
    run, sent = await submit(tmp_path, clock, answer)
    assert kinds(run) == ["intent", "failed"]
    assert events(run)[1]["retryable"] is True and "unexpected answer" in events(run)[1]["error"]
    assert sent == [] and slot_free(run)


async def test_a_stop_before_sending_leaves_the_item_pending_without_an_intent(tmp_path: Path, clock: FakeClock) -> None:
    client = FakeClient(submit=[Accepted("r-1")])
    run = make_run(tmp_path, client, clock, [IT])
    run.admission.queue(resubmit=[], fresh=[IT])
    admitted = await run.admission.next_submission()
    run.stop.stop_submitting("budget reached")
    send, recv = anyio.create_memory_object_stream[Job](1)
    async with send, recv:
        await submit_one(run, admitted, send)
    assert kinds(run) == [] and client.calls == [] and slot_free(run)


async def test_a_closed_poller_leaves_the_accepted_id_for_the_next_run(tmp_path: Path, clock: FakeClock) -> None:
    run = make_run(tmp_path, FakeClient(submit=[Accepted("r-1")]), clock, [IT])
    run.admission.queue(resubmit=[], fresh=[IT])
    admitted = await run.admission.next_submission()
    send, recv = anyio.create_memory_object_stream[Job](1)
    recv.close()  # the poller is gone (the run is being interrupted)
    async with send:
        await submit_one(run, admitted, send)
    assert kinds(run) == ["intent", "submitted"]
    assert slot_free(run)
