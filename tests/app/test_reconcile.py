"""Reconcile's matching, without a network: which history rows belong to a folder and what differs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchgen.api.outcomes import HistoryRow
from batchgen.app.reconcile import SKEW_S, format_report, main, match, read_folder
from batchgen.core.errors import ExitCode, UserError
from batchgen.store import events as E
from batchgen.store.events import Stage
from batchgen.store.ledger import Ledger

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
A = {"prompt": "a fox", "seed": 101}
B = {"prompt": "a hen", "seed": 102}


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write(out: Path, lines: list[tuple[float, E.Event]]) -> Path:
    """A ledger whose lines carry the given times (seconds after T0)."""
    out.mkdir(parents=True, exist_ok=True)
    led = Ledger(out / "ledger.jsonl", fsync_interval=0.0)
    led.open()
    for _, event in lines:
        led.write(event)
    led.close()
    text = (out / "ledger.jsonl").read_text().splitlines()
    fixed = []
    for (t, _), raw in zip(lines, text, strict=True):
        ev = json.loads(raw)
        ev["ts"] = stamp(t)
        fixed.append(json.dumps(ev))
    (out / "ledger.jsonl").write_text("\n".join(fixed) + "\n")
    return out


def hrow(rid: str, body: dict[str, Any] | None, at: float, status: str = "COMPLETED", cost: float | None = 0.1) -> HistoryRow:
    return HistoryRow(rid, status, "ideogram-txt-2-img", cost if status == "COMPLETED" else (0.0 if status == "FAILED" else None),
                      body, f"https://cdn/{rid}.png" if status == "COMPLETED" else None,
                      created=T0 + timedelta(seconds=at))


def intent(item: str, params: dict[str, Any], attempt: int = 1) -> E.Event:
    return E.intent(item, params_sha="x", attempt=attempt, params=params)


def done(item: str, rid: str) -> list[E.Event]:
    return [E.submitted(item, request_id=rid), E.completed(item, request_id=rid, output_url=f"https://cdn/{rid}.png", cost_usd=0.1),
            E.downloaded(item, request_id=rid, file=f"images/{item}.png", sha256="0" * 64, bytes=10)]


def test_a_clean_folder_matches(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [(0, E.run_start(pid=1, items=2, pending=2)), (1, intent("a", A)),
                                 *[(2, e) for e in done("a", "ra")], (3, intent("b", B)), *[(4, e) for e in done("b", "rb")]])
    folder = read_folder(out)
    rows = [hrow("ra", A, 1.5), hrow("rb", B, 3.5), hrow("elsewhere", {"prompt": "other"}, 2)]
    report = match(folder, rows)
    assert report.matches
    assert (report.billed_usd, report.ledger_usd, report.requests_billed) == (pytest.approx(0.2), pytest.approx(0.2), 2)
    assert report.not_in_ledger == report.not_billed == report.duplicates_paid == []
    assert "all matches" in format_report(report, out)[-1]


def test_a_lost_answer_is_found_by_its_body_and_counted_as_paid_twice(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [
        (0, E.run_start(pid=1, items=1, pending=1)),
        (1, intent("a", A)), (2, E.submit_retry("a", error="connection reset", uncertain=True)),
        (3, intent("a", A, 2)), *[(4, e) for e in done("a", "ra2")],
    ])
    rows = [hrow("ra1", A, 1.2), hrow("ra2", A, 3.2)]
    report = match(read_folder(out), rows)
    assert not report.matches
    assert report.billed_usd == pytest.approx(0.2) and report.ledger_usd == pytest.approx(0.1)
    assert report.not_in_ledger == [{"request_id": "ra1", "item": "a", "status": "COMPLETED", "cost_usd": 0.1}]
    assert report.duplicates_paid == [{"item": "a", "request_ids": ["ra1", "ra2"], "cost": 0.2, "extra_usd": 0.1}]


def test_identical_bodies_of_different_items_are_matched_in_intent_order_each_row_once(tmp_path: Path) -> None:
    # Three items send the same body; the process dies after each POST (a run_start follows).
    lines: list[tuple[float, E.Event]] = [(0, E.run_start(pid=1, items=3, pending=3)), (10, intent("x", A))]
    lines += [(20, E.run_start(pid=2, items=3, pending=3)), (30, intent("y", A))]
    lines += [(40, E.run_start(pid=3, items=3, pending=3)), (50, intent("z", A))]
    out = write(tmp_path / "o", lines)
    rows = [hrow("r-z", A, 50.5), hrow("r-x", A, 10.5), hrow("r-y", A, 30.5)]
    rows.sort(key=lambda r: r.created)  # the order the client hands them over: oldest first
    report = match(read_folder(out), rows)
    assert [(e["item"], e["request_id"]) for e in report.not_in_ledger] == [("x", "r-x"), ("y", "r-y"), ("z", "r-z")]
    assert report.duplicates_paid == []


def test_a_row_is_used_once_and_rows_from_before_or_long_after_an_intent_are_not_claimed(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [
        (0, E.run_start(pid=1, items=1, pending=1)),
        (1000, intent("a", A)),
        (1001, E.submit_retry("a", error="reset", uncertain=True)),
    ])
    rows = [
        hrow("older", A, 1000 - SKEW_S - 60),  # the same body sent earlier, from another folder
        hrow("mine", A, 1000.4),
        hrow("second", A, 1000.6),  # one intent, one row: the other is not this folder's
        hrow("later", A, 1001 + SKEW_S + 60),
    ]
    report = match(read_folder(out), rows)
    assert [e["request_id"] for e in report.not_in_ledger] == ["mine"]
    assert report.billed_usd == pytest.approx(0.1)


def test_answered_intents_claim_nothing_and_failed_rows_are_not_reported(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [
        (0, E.run_start(pid=1, items=2, pending=2)),
        (1, intent("a", A)), *[(2, e) for e in done("a", "ra")],
        (3, intent("b", B)),  # crash: no answer
    ])
    rows = [hrow("ra", A, 1.5), hrow("copy-of-a", A, 1.6), hrow("rb", B, 3.2, status="FAILED")]
    report = match(read_folder(out), rows)
    assert report.not_in_ledger == [] and report.matches


def test_pending_requests_not_in_the_ledger_are_reported_unbilled(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [(0, E.run_start(pid=1, items=1, pending=1)), (1, intent("a", A))])
    report = match(read_folder(out), [hrow("ra", A, 1.2, status="PENDING")])
    assert report.not_in_ledger == [{"request_id": "ra", "item": "a", "status": "PENDING", "cost_usd": None}]
    assert report.billed_usd == 0 and report.requests_billed == 0 and not report.matches


def test_paid_in_the_ledger_but_not_billed_by_the_history(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [
        (0, E.run_start(pid=1, items=3, pending=3)),
        (1, intent("a", A)), *[(2, e) for e in done("a", "ra")],
        (3, intent("b", B)), *[(4, e) for e in done("b", "rb")],
        (5, intent("c", {"prompt": "c"})), (6, E.submitted("c", request_id="rc")),
        (7, E.failed("c", stage=Stage.GENERATE, error="blocked", retryable=False, request_id="rc")),
    ])
    rows = [hrow("ra", A, 1.5), hrow("rb", B, 3.5, status="PENDING"), hrow("rc", {"prompt": "c"}, 5.5, status="FAILED")]
    report = match(read_folder(out), rows)  # "rb" completed in the ledger, still PENDING in the history
    assert report.not_billed == [{"request_id": "rb", "item": "b", "status": "PENDING"}]
    missing = match(read_folder(out), [hrow("ra", A, 1.5)])
    assert {e["request_id"] for e in missing.not_billed} == {"rb"}
    assert missing.not_billed[0]["status"] is None


def test_an_expired_record_paid_again_is_a_duplicate(tmp_path: Path) -> None:
    out = write(tmp_path / "o", [
        (0, E.run_start(pid=1, items=1, pending=1)),
        (1, intent("a", A)), (2, E.submitted("a", request_id="r1")),
        (4000, E.run_start(pid=2, items=1, pending=0)),
        (4001, E.expired("a", request_id="r1", error="404")),
        (4002, intent("a", A, 2)), *[(4003, e) for e in done("a", "r2")],
    ])
    report = match(read_folder(out), [hrow("r1", A, 1.5), hrow("r2", A, 4002.5)])
    assert report.not_in_ledger == []
    assert report.duplicates_paid == [{"item": "a", "request_ids": ["r1", "r2"], "cost": 0.2, "extra_usd": 0.1}]
    assert report.billed_usd == pytest.approx(0.2) and report.ledger_usd == pytest.approx(0.1)


def test_main_refuses_without_key_or_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    with pytest.raises(UserError) as e:
        main(tmp_path)
    assert e.value.code == ExitCode.BAD_INPUT and "SEGMIND_API_KEY" in str(e.value)
    monkeypatch.setenv("SEGMIND_API_KEY", "k-123")
    with pytest.raises(UserError) as e:
        main(tmp_path / "nowhere")
    assert e.value.code == ExitCode.BAD_INPUT and "no ledger" in str(e.value)
    assert not (tmp_path / "nowhere").exists()
