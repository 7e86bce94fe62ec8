"""An expired record is recovered, not paid for again: the history's answer decides, row by row.

Each test hands one expired request (a job in flight holding its slot) to the recovery, gives the
history one answer and checks the ledger, where the job went and whether anything may be paid
again. Paying again is right only for a request the history does not know.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.api.outcomes import (
    HistoryNotFound,
    HistoryPage,
    HistoryRow,
    HistoryUnavailable,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.engine.config import RetryPolicy
from batchgen.engine.context import Job
from batchgen.engine.recover import _Watch
from tests.engine.fakes import events, item, kinds
from tests.engine.recover_fakes import QUICK, FakeHistory, Rig, rig, row
from tests.support.sandbox import FakeClock

IT = item("a")


async def expired(tmp_path: Path, clock: FakeClock, *answers: object, **kw: object) -> tuple[Rig, Job]:
    """One job in flight whose poll met a 404; the history answers ``answers`` to its lookups."""
    history = FakeHistory()
    history.script("r-1", *answers)  # type: ignore[arg-type]
    r = rig(tmp_path, clock, history, [IT], **kw)  # type: ignore[arg-type]
    await r.run.admission.resume()
    job = Job(item=IT, request_id="r-1", submitted_mono=clock())
    r.run.on_expired(job, "HTTP 404: Request r-1 not found")
    return r, job


async def ask_due(r: Rig) -> None:
    """Run every lookup that is due now, as the recovery's task would."""
    due = [w for at, _, w in sorted(r.recovery._heap, key=lambda e: e[:2]) if at <= r.run.clock()]
    r.recovery._heap = [e for e in r.recovery._heap if e[2] not in due]
    for watch in due:
        await r.recovery.look_up(watch)


def slot_free(r: Rig) -> bool:
    adm = r.run.admission
    return adm.in_flight == 0 and adm.slots.value == r.run.cfg.concurrency


async def test_completed_in_the_history_is_recorded_and_downloaded_without_paying(
    tmp_path: Path, clock: FakeClock
) -> None:
    r, job = await expired(tmp_path, clock, row("r-1", {"prompt": "x"}, 0.0, cost_usd=0.3))
    assert r.recovery.waiting() == [(clock(), job)] and kinds(r.run) == []  # taken over, nothing written yet
    await ask_due(r)
    (done,) = events(r.run)
    assert done["event"] == "completed" and done["request_id"] == "r-1" and done["how"] == "history-by-id"
    assert done["output_url"] == "https://files.example/r-1.png" and done["cost_usd"] == 0.3
    assert [j.output_url for j in r.downloads()] == ["https://files.example/r-1.png"]
    assert r.run.ledger.state.spent_usd == pytest.approx(0.3)
    assert r.run.counters.recovered == 1 and r.run.counters.expired_resubmits == 0
    assert not r.run.admission.resubmit and r.run.admission.in_flight == 1  # its slot goes on to the download


async def test_failed_in_the_history_fails_the_item_for_good(tmp_path: Path, clock: FakeClock) -> None:
    r, _ = await expired(tmp_path, clock, row("r-1", {"prompt": "x"}, 0.0, status="FAILED", error="NSFW content"))
    await ask_due(r)
    (failed,) = events(r.run)
    assert failed["event"] == "failed" and failed["stage"] == "generate" and failed["retryable"] is False
    assert failed["error"] == "generation FAILED: NSFW content" and failed["request_id"] == "r-1"
    assert not r.run.admission.resubmit and slot_free(r) and not r.downloads()


@pytest.mark.parametrize("shown", [HistoryRow("r-1"), row("r-1", {"prompt": "x"}, 0.0, status="PENDING")],
                         ids=["not-landed", "pending"])
async def test_pending_or_not_landed_is_asked_again_then_fails_retryable_never_repaid(
    tmp_path: Path, clock: FakeClock, shown: HistoryRow
) -> None:
    r, job = await expired(tmp_path, clock, shown)
    await ask_due(r)
    assert kinds(r.run) == [] and [j for _, j in r.recovery.waiting()] == [job]  # asked again later
    asked = 1
    while r.recovery.waiting():
        clock.advance(QUICK.recheck_cap_s)
        await ask_due(r)
        asked += 1
    assert asked > 3 and clock() - 1000.0 >= QUICK.expired_wait_s  # asked several times, up to the bound
    (failed,) = events(r.run)
    assert failed["event"] == "failed" and failed["retryable"] is True and failed["stage"] == "poll"
    assert "still shows it" in failed["error"] and "not paid for again in this run" in failed["error"]
    assert not r.run.admission.resubmit and r.run.counters.expired_resubmits == 0 and slot_free(r)


async def test_pending_then_completed_is_downloaded(tmp_path: Path, clock: FakeClock) -> None:
    r, _ = await expired(tmp_path, clock, HistoryRow("r-1"), row("r-1", {}, 0.0, status="PENDING"),
                         row("r-1", {}, 0.0))
    for _ in range(3):
        await ask_due(r)
        clock.advance(QUICK.recheck_cap_s)
    assert kinds(r.run) == ["completed"] and len(r.downloads()) == 1 and r.history.count("get") == 3


async def test_unknown_to_the_history_takes_the_old_expiry_path(tmp_path: Path, clock: FakeClock) -> None:
    r, _ = await expired(tmp_path, clock, HistoryNotFound("r-1", "HTTP 404: Request r-1 not found"))
    await ask_due(r)
    (exp,) = events(r.run)
    assert exp["event"] == "expired" and exp["request_id"] == "r-1"
    assert "the request history does not know it either" in exp["error"]
    assert list(r.run.admission.resubmit) == [IT] and r.run.counters.expired_resubmits == 1 and slot_free(r)


@pytest.mark.parametrize("trouble", [RateLimited(2.0, "HTTP 429"), Retryable("HTTP 503", 503),
                                     HistoryPage((), 1, 100)], ids=["429", "503", "odd-answer"])
async def test_history_trouble_is_asked_again_never_repaid(tmp_path: Path, clock: FakeClock, trouble: object) -> None:
    pacing = {"retry": RetryPolicy()} if isinstance(trouble, RateLimited) else {}
    r, job = await expired(tmp_path, clock, trouble, row("r-1", {}, 0.0), **pacing)
    await ask_due(r)
    assert kinds(r.run) == [] and [j for _, j in r.recovery.waiting()] == [job]
    if isinstance(trouble, RateLimited):
        # History calls count against the limit like polls (--rpm-scope all): the 429 pauses the run.
        assert r.run.limiter.rate_limited == 1 and r.recovery.waiting()[0][0] >= clock() + 2.0
    clock.advance(10.0)
    await ask_due(r)
    assert kinds(r.run) == ["completed"]


@pytest.mark.parametrize("answer", [HistoryUnavailable("no request history at x (HTTP 405)", 405),
                                    RunFatal("forbidden", "the request history is not open to this key", 403)])
async def test_no_history_after_all_warns_once_and_goes_the_old_way(tmp_path: Path, clock: FakeClock,
                                                                     answer: object) -> None:
    r, job = await expired(tmp_path, clock, answer)
    other = Job(item=item("b"), request_id="r-2")
    r.recovery._push(_Watch(other, "HTTP 404", clock()), clock() + 5.0)  # waiting too: it goes back as well
    await r.run.admission.resume()
    await ask_due(r)
    assert [ev["event"] for ev in events(r.run)] == ["expired", "expired"]
    assert len(r.warnings) == 1 and r.warnings[0].startswith("no request history (")
    assert not r.recovery.waiting()
    assert r.recovery.take_expired(job, "again") is False  # from now on the run goes the old way
    assert r.history.count("get") == 1


async def test_while_the_probe_is_out_nothing_is_asked_and_a_missing_history_gives_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    history = FakeHistory(probe=HistoryUnavailable("no request history at x (HTTP 404: not found)", 404))
    r = rig(tmp_path, clock, history, [IT], available=None)
    await r.run.admission.resume()
    r.run.on_expired(Job(item=IT, request_id="r-1"), "HTTP 404")
    assert kinds(r.run) == [] and r.recovery.waiting()
    await r.recovery.access.probe()
    assert kinds(r.run) == ["expired"] and list(r.run.admission.resubmit) == [IT]
    assert r.warnings == ["no request history (no request history at x (HTTP 404: not found)); a lost submit "
                          "answer or an expired record is paid for again"]
    assert history.count("get") == 0 and history.count("list") == 1


async def test_a_run_without_recovery_expires_as_before(tmp_path: Path, clock: FakeClock) -> None:
    r, _ = await expired(tmp_path, clock, HistoryNotFound("r-1", "x"))
    r.run.recovery = None
    r.run.on_expired(Job(item=item("b"), request_id="r-9"), "HTTP 404")
    assert [ev["item"] for ev in events(r.run)] == ["b"] and kinds(r.run) == ["expired"]
