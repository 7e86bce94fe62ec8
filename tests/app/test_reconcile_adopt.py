"""``recovered`` in the fold: an item waiting for a request takes the recovered one (downloaded or
polled by the next run, never paid again); an item that has its own keeps it and only counts the
spend. Plus the readers of a folder (status, catalog) over a ledger that holds one."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.engine.plan import plan
from batchgen.manifest import load_manifest
from batchgen.outputs.catalog import load_catalog
from batchgen.outputs.status import summarize
from batchgen.store import events as E
from batchgen.store.events import Phase, Stage
from batchgen.store.fold import fold
from batchgen.store.ledger import Ledger, parse_ts, replay

P = {"prompt": "a fox", "seed": 101}


def lines(*events: E.Event) -> list[dict]:
    return [{"ts": "2026-05-01T12:00:00.000Z", "item": e.item, "event": e.kind.value,
             **{k: v for k, v in e.fields.items() if v is not None}} for e in events]


def test_an_unanswered_intent_takes_a_recovered_completed_request() -> None:
    st = fold(lines(
        E.run_start(pid=1, items=1, pending=1),
        E.intent("a", params_sha="s", attempt=1, params=P),
        E.recovered("a", request_id="r1", how="history-body-match", output_url="https://cdn/r1.png", cost_usd=0.1),
    ))
    a = st.items["a"]
    assert (a.state, a.request_id, a.output_url, a.paid, a.submits) == (Phase.COMPLETED, "r1", "https://cdn/r1.png", True, 1)
    assert st.spent_usd == pytest.approx(0.1) and st.submits == 1 and st.completed_without_cost == 0


def test_a_recovered_request_still_running_is_polled_from_when_it_was_sent() -> None:
    st = fold(lines(
        E.intent("a", params_sha="s", attempt=1, params=P),
        E.submit_retry("a", error="reset", uncertain=True),
        E.recovered("a", request_id="r1", how="history-body-match", submitted_at="2026-05-01T11:30:00.000Z"),
    ))
    a = st.items["a"]
    assert (a.state, a.request_id, a.output_url) == (Phase.SUBMITTED, "r1", None)
    assert a.submitted_ts == parse_ts("2026-05-01T11:30:00.000Z")  # the retention clock starts at the submit
    assert st.spent_usd == 0


def test_a_failed_item_takes_a_recovered_completed_request() -> None:
    st = fold(lines(
        E.intent("a", params_sha="s", attempt=1, params=P),
        E.failed("a", stage=Stage.SUBMIT, error="gave up", retryable=True, uncertain=True),
        E.recovered("a", request_id="r1", how="history-body-match", output_url="https://cdn/r1.png", cost_usd=0.1),
    ))
    assert (st.items["a"].state, st.items["a"].error) == (Phase.COMPLETED, None)


@pytest.mark.parametrize("then", ["submitted", "completed", "downloaded"])
def test_an_item_with_its_own_request_keeps_it_and_counts_the_extra_spend(then: str) -> None:
    story = [E.intent("a", params_sha="s", attempt=1, params=P), E.submitted("a", request_id="r2")]
    if then in ("completed", "downloaded"):
        story.append(E.completed("a", request_id="r2", output_url="https://cdn/r2.png", cost_usd=0.1))
    if then == "downloaded":
        story.append(E.downloaded("a", request_id="r2", file="images/a.png", sha256="0" * 64, bytes=3))
    before = fold(lines(*story))
    after = fold(lines(*story, E.recovered("a", request_id="r1", how="history-body-match",
                                           output_url="https://cdn/r1.png", cost_usd=0.1)))
    a, b = before.items["a"], after.items["a"]
    assert (b.state, b.request_id, b.output_url) == (a.state, a.request_id, a.output_url)
    assert after.spent_usd == pytest.approx(before.spent_usd + 0.1)
    assert b.submits == a.submits + 1 and after.submits == before.submits + 1


def test_the_next_run_plans_a_download_for_an_adopted_item(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("model: ideogram-txt-2-img\nitems:\n  - id: a\n    prompt: a fox\n    seed: 101\n"
                        "  - id: b\n    prompt: a hen\n    seed: 102\n")
    items = list(load_manifest(manifest).items)
    st = fold(lines(
        E.intent("a", params_sha="s", attempt=1, params=P),
        E.recovered("a", request_id="r1", how="history-body-match", output_url="https://cdn/r1.png", cost_usd=0.1),
        E.intent("b", params_sha="s", attempt=1, params=P),
        E.recovered("b", request_id="r2", how="history-body-match"),
    ))
    groups = plan(items, st, tmp_path / "images")
    assert [it.id for it in groups["download"]] == ["a"] and [it.id for it in groups["poll"]] == ["b"]
    assert groups["uncertain"] == [] and groups["pending"] == []


def test_status_and_catalog_read_a_ledger_with_recovered_lines(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    led = Ledger(tmp_path / "ledger.jsonl", fsync_interval=0.0)
    led.open()
    for e in (E.run_start(pid=1, items=1, pending=1), E.intent("a", params_sha="s", attempt=1, params=P),
              E.recovered("a", request_id="r1", how="history-body-match", output_url="https://cdn/r1.png", cost_usd=0.1)):
        led.write(e)
    led.close()
    assert replay(tmp_path / "ledger.jsonl") == led.state
    cat = load_catalog(tmp_path)
    assert cat.records["a"].request_id == "r1" and cat.records["a"].cost_usd == pytest.approx(0.1)
    assert cat.spent_usd == pytest.approx(0.1)
    s = summarize(tmp_path)
    assert s["states"]["completed"] == 1
