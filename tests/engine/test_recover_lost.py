"""A submit whose answer was lost is found in the history by its body before anything is paid again.

The rules are the ones ``batchgen reconcile`` uses (engine/matching.py): the exact body sent, a row
created around the intent, identical bodies matched in intent order with each row used once, and
never a request the ledger already knows. Only once the record had time to land and nothing
matches is the item sent again.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.outcomes import Accepted, HistoryRow, HistoryUnavailable, Retryable
from batchgen.core.fastjson import canonical_json
from batchgen.engine.context import Job
from batchgen.engine.matching import SKEW_S, Intent, IntentScan, match_intents
from batchgen.engine.submit import submit_one
from batchgen.store import events as E
from batchgen.store.events import EventKind, Phase
from batchgen.store.ledger import parse_ts
from tests.engine.fakes import FakeClient, events, item, kinds
from tests.engine.recover_fakes import QUICK, FakeHistory, Rig, at, rig, row
from tests.support.sandbox import FakeClock

A, B = item("a"), item("b")
SAME = {"prompt": "the same picture", "seed": 7}  # two items with one body
A2, B2 = item("a2", **SAME), item("b2", **SAME)


def body(it: Any) -> dict[str, Any]:
    return dict(it.params)


async def lose(r: Rig, it: Any, why: str = "connection reset by peer") -> None:
    """``it``'s POST went out now and its answer was lost (it holds its slot, as the submitter leaves it)."""
    await r.run.admission.resume()
    assert r.recovery.take_lost(it, body(it), r.run.wall(), why)


def state(r: Rig, it: Any) -> Phase:
    return r.run.ledger.state.items[it.id].state


# ---- the submitter hands a lost answer over instead of retrying ----------------------------------


async def test_a_lost_answer_is_parked_with_its_slot_not_sent_again(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory()
    r = rig(tmp_path, clock, history, [A])
    r.run.client = client = FakeClient(submit=[Retryable("connection reset by peer", None), Accepted("r-2")])
    r.run.admission.queue(resubmit=[], fresh=[A])
    admitted = await r.run.admission.next_submission()
    send, recv = anyio.create_memory_object_stream[Job](math.inf)
    async with send, recv:
        await submit_one(r.run, admitted, send)
    assert client.count("submit") == 1 and kinds(r.run) == ["intent"]  # no retry line: it stays uncertain
    assert r.run.admission.in_flight == 1 and r.run.admission.submitting == 0
    assert list(r.recovery.lost.entries) == ["a"] and r.run.counters.possible_double_charges == 0


async def test_without_a_history_the_submitter_retries_as_before(tmp_path: Path, clock: FakeClock) -> None:
    r = rig(tmp_path, clock, FakeHistory(), [A], available=False)
    r.run.client = client = FakeClient(submit=[Retryable("connection reset by peer", None), Accepted("r-2")])
    r.run.admission.queue(resubmit=[], fresh=[A])
    admitted = await r.run.admission.next_submission()
    send, recv = anyio.create_memory_object_stream[Job](math.inf)
    async with send, recv:
        await submit_one(r.run, admitted, send)
    assert client.count("submit") == 2 and kinds(r.run) == ["intent", "submit_retry", "intent", "submitted"]
    assert r.run.counters.possible_double_charges == 1


# ---- found by body ----------------------------------------------------------------------------


async def test_found_completed_is_adopted_and_downloaded(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory(rows=[row("r-1", body(A), clock() + 0.2, cost_usd=0.25)])
    r = rig(tmp_path, clock, history, [A])
    await lose(r, A)
    await r.recovery.lost.sweep()
    (rec,) = events(r.run)
    assert (rec["event"], rec["request_id"], rec["how"]) == ("recovered", "r-1", "history-body-match")
    assert rec["output_url"] == "https://files.example/r-1.png" and rec["cost_usd"] == 0.25
    assert rec["submitted_at"] == at(clock() + 0.2).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert [(j.request_id, j.output_url) for j in r.downloads()] == [("r-1", "https://files.example/r-1.png")]
    assert state(r, A) == Phase.COMPLETED and r.run.counters.recovered == 1
    assert not r.run.admission.resubmit and not r.recovery.lost.entries


async def test_found_running_goes_to_the_poller_with_its_deadline(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory(rows=[row("r-1", body(A), clock(), status="PENDING")])
    r = rig(tmp_path, clock, history, [A], retention_s=1000.0)
    await lose(r, A)
    clock.advance(30.0)
    await r.recovery.lost.sweep()
    assert kinds(r.run) == ["recovered"] and state(r, A) == Phase.SUBMITTED
    (job,) = r.polled()
    assert job.request_id == "r-1" and job.submitted_mono == clock() - 30.0
    assert job.deadline_mono == clock() - 30.0 + 1000.0 - 50.0


async def test_found_failed_fails_the_item_as_a_failed_generation(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory(rows=[row("r-1", body(A), clock(), status="FAILED", error="safety filter")])
    r = rig(tmp_path, clock, history, [A])
    await lose(r, A)
    await r.recovery.lost.sweep()
    assert kinds(r.run) == ["recovered", "failed"]
    failed = events(r.run)[-1]
    assert failed["retryable"] is False and failed["error"] == "generation FAILED: safety filter"
    assert r.run.admission.in_flight == 0 and not r.run.admission.resubmit


async def test_identical_bodies_are_matched_in_intent_order_each_row_once(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory(rows=[row("r-first", SAME, clock() + 0.5)])
    r = rig(tmp_path, clock, history, [A2, B2])
    await lose(r, A2)
    clock.advance(1.0)
    await lose(r, B2)
    await r.recovery.lost.sweep()
    assert [(ev["item"], ev["request_id"]) for ev in events(r.run)] == [("a2", "r-first")]
    assert list(r.recovery.lost.entries) == ["b2"]  # its own request has not landed (or never was)
    history.rows.append(row("r-second", SAME, clock() + 0.5))
    await r.recovery.lost.sweep()
    assert [(ev["item"], ev["request_id"]) for ev in events(r.run)] == [("a2", "r-first"), ("b2", "r-second")]
    assert history.count("list") == 2


async def test_a_request_the_ledger_knows_or_one_from_another_time_is_never_taken(
    tmp_path: Path, clock: FakeClock
) -> None:
    history = FakeHistory(rows=[
        row("r-known", body(A), clock() + 0.1),  # the ledger has it (another item's, say)
        row("r-old", body(A), clock() - SKEW_S - 60),  # the same body sent long before
    ])
    r = rig(tmp_path, clock, history, [A, B])
    r.run.record(EventKind.SUBMITTED, "b", request_id="r-known")
    r.recovery.note_known("r-known")
    await lose(r, A)
    await r.recovery.lost.sweep()
    assert kinds(r.run) == ["submitted"] and list(r.recovery.lost.entries) == ["a"]


async def test_nothing_matches_after_the_landing_wait_then_it_is_sent_again(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory()
    r = rig(tmp_path, clock, history, [A], recovery=replace(QUICK, first_recheck_s=1.0))
    await lose(r, A)
    lost = r.recovery.lost
    sweeps = 0
    while lost.entries:
        await lost.sweep()
        sweeps += 1
        if lost.entries:
            entry = lost.entries["a"]
            assert entry.next_at > clock() and kinds(r.run) == []  # nothing written while waiting
            clock.advance(entry.next_at - clock())
    assert sweeps >= 3 and clock() - 1000.0 >= QUICK.landing_wait_s  # not before the documented wait
    (again,) = events(r.run)
    assert again["event"] == "submit_retry" and "uncertain" not in again  # looked for: it was not billed
    assert "no request in the history matches it 60 s after it was sent" in again["error"]
    assert list(r.run.admission.resubmit) == [A] and r.run.admission.in_flight == 0
    assert r.run.counters.possible_double_charges == 0


async def test_one_listing_serves_every_waiting_item_newest_first(tmp_path: Path, clock: FakeClock) -> None:
    items = [item(f"i{n}") for n in range(5)]
    old = [row(f"old-{n}", {"prompt": f"old {n}"}, clock() - 3 * SKEW_S - n) for n in range(40)]
    found = [row(f"r-{it.id}", body(it), clock() + 1) for it in items]
    history = FakeHistory(rows=old + found, per_page=4)
    r = rig(tmp_path, clock, history, items)
    for it in items:
        await lose(r, it)
    await r.recovery.lost.sweep()
    assert sorted(ev["request_id"] for ev in events(r.run)) == sorted(f"r-{it.id}" for it in items)
    lists = [arg for kind, arg in history.calls if kind == "list"]
    assert all(a["order"] == "desc" and a["model"] == "test-model" for a in lists)
    assert len(lists) <= 3  # it stops once the pages are older than the intents, not after all 45 rows


async def test_an_earlier_runs_intent_is_found_from_the_ledger(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory()
    r = rig(tmp_path, clock, history, [A])
    r.run.ledger.write(E.intent("a", params_sha="x", attempt=1, params=body(A)))
    r.run.ledger.write(E.run_start(pid=1, items=1, pending=0))  # the process that sent it died
    sent = parse_ts(events(r.run)[0]["ts"])
    start = clock()
    r.run.wall = lambda: sent + 5.0 + (clock() - start)  # the ledger's clock is the real one
    history.rows.append(replace_created(row("r-1", body(A), 0.0), sent + 0.3))
    await r.run.admission.resume()
    r.recovery.take_resumed(A)
    await r.recovery.lost.sweep()
    assert kinds(r.run)[-1] == "recovered" and events(r.run)[-1]["request_id"] == "r-1"
    assert r.run.counters.uncertain_resubmits == 0 and len(r.downloads()) == 1


async def test_a_history_that_does_not_answer_leaves_the_item_uncertain_for_the_next_run(
    tmp_path: Path, clock: FakeClock
) -> None:
    history = FakeHistory()
    r = rig(tmp_path, clock, history, [A])
    r.run.record(EventKind.INTENT, "a", params_sha="x", attempt=1, params=body(A))
    await lose(r, A)
    history.list_failures.extend([Retryable("HTTP 502", 502)] * 1000)
    while r.recovery.lost.entries:
        await r.recovery.lost.sweep()
        clock.advance(QUICK.recheck_cap_s)
    assert kinds(r.run) == ["intent"] and state(r, A) == Phase.INTENT  # the next run checks it again
    assert r.run.admission.in_flight == 0 and not r.run.admission.resubmit
    assert len(r.warnings) == 1 and "left uncertain (a)" in r.warnings[0] and "HTTP 502" in r.warnings[0]


async def test_answers_lost_over_and_over_fail_the_item_in_bounded_tries(tmp_path: Path, clock: FakeClock) -> None:
    r = rig(tmp_path, clock, FakeHistory(), [A])
    for n in range(r.run.cfg.retry.submit_retries + 1):
        await lose(r, A)
        clock.advance(QUICK.landing_wait_s + 1)
        await r.recovery.lost.sweep()
        if n < r.run.cfg.retry.submit_retries:
            assert r.run.admission.resubmit.popleft() == A
    assert kinds(r.run)[-1] == "failed" and events(r.run)[-1]["retryable"] is True
    assert "never in the request history" in events(r.run)[-1]["error"]


async def test_when_the_history_turns_out_missing_waiting_items_go_the_old_way(tmp_path: Path, clock: FakeClock) -> None:
    history = FakeHistory(list_failures=deque([HistoryUnavailable("no request history at x (HTTP 405)", 405)]))
    r = rig(tmp_path, clock, history, [A, B])
    r.run.record(EventKind.INTENT, "b", params_sha="x", attempt=1, params=body(B))  # an earlier run's
    await lose(r, A)
    await r.run.admission.resume()
    r.recovery.take_resumed(B)
    await r.recovery.lost.sweep()
    assert [(ev["item"], ev["event"], ev.get("uncertain")) for ev in events(r.run)] == [
        ("b", "intent", None), ("a", "submit_retry", True)]  # b's intent stays as it was: no line
    assert list(r.run.admission.resubmit) == [A, B]
    assert r.run.counters.possible_double_charges == 1 and r.run.counters.uncertain_resubmits == 1
    assert len(r.warnings) == 1


# ---- the rule itself, shared with ``batchgen reconcile`` -----------------------------------------


def test_the_scan_keeps_open_intents_since_the_last_answer() -> None:
    scan = IntentScan()
    lines = [
        ({"event": "intent", "item": "a", "params": {"p": 1}}, 1.0),
        ({"event": "submitted", "item": "a", "request_id": "r-1"}, 2.0),
        ({"event": "intent", "item": "a", "params": {"p": 1}}, 3.0),
        ({"event": "submit_retry", "item": "a", "error": "reset", "uncertain": True}, 4.0),
        ({"event": "intent", "item": "a", "params": {"p": 1}}, 5.0),
        ({"event": "submit_retry", "item": "a", "error": "HTTP 500", "status": 500}, 6.0),  # refused: not billed
        ({"event": "intent", "item": "a", "params": {"p": 1}}, 7.0),
        ({"event": "run_start"}, 9.0),
    ]
    for ev, ts in lines:
        scan.feed(ev, ts)
    assert [(i.ts, i.until) for i in scan.open_intents("a")] == [(3.0, 4.0), (7.0, 9.0)]
    assert scan.known == {"r-1": "a"} and scan.open_intents("nobody") == []


def test_match_takes_rows_in_intent_order_within_their_window() -> None:
    same = canonical_json(SAME)
    first, second = Intent("x", same, 1000.0, until=1001.0), Intent("y", same, 2000.0, until=2001.0)
    rows = [row("early", SAME, 0.0), row("late", SAME, 0.0)]
    rows = [replace_created(rows[0], 1000.5), replace_created(rows[1], 2000.5)]
    assert [(i.item, r.request_id) for i, r in match_intents([first, second], rows, set())] == [
        ("x", "early"), ("y", "late")]
    assert [(i.item, r.request_id) for i, r in match_intents([second], rows, {"late"}, skew=10)] == []


def replace_created(r: HistoryRow, wall: float) -> HistoryRow:
    return replace(r, created=datetime.fromtimestamp(wall, UTC))
