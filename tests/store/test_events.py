"""Event kinds and item states as enums, the typed builders, and the ledger lines they write.

The enums must not change a byte of the format: a member is written as the same string the engine
wrote before, through orjson and the standard library alike, and old names keep importing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

import batchgen.engine
from batchgen.core import fastjson
from batchgen.outputs.status import summarize
from batchgen.store import events as E
from batchgen.store import ledger as L
from batchgen.store.events import EventKind, Phase, Stage
from batchgen.store.fold import apply, fold
from batchgen.store.ledger import Ledger, replay

ENGINE = Path(batchgen.engine.__file__).parent


def every_builder() -> list[E.Event]:
    """One event of each kind, in an order a real item could live through them."""
    return [
        E.run_start(pid=42, items=1, pending=1),
        E.intent("a", params_sha="abc", attempt=1, params={"prompt": "café ☕ 東京", "seed": 7}),
        E.submit_retry("a", error="HTTP 503: busy", status=503, uncertain=True),
        E.intent("a", params_sha="abc", attempt=2, params={"prompt": "café ☕ 東京", "seed": 7}),
        E.submitted("a", request_id="r1"),
        E.expired("a", request_id="r1", error="record gone", note="submitting again"),
        E.intent("a", params_sha="abc", attempt=3, params={"prompt": "café ☕ 東京", "seed": 7}),
        E.submitted("a", request_id="r2"),
        E.completed("a", request_id="r2", output_url="https://cdn/a.png", cost_usd=0.1, ready_s=1.5),
        E.failed("a", stage=Stage.DOWNLOAD, error="timed out", retryable=True, request_id="r2",
                 output_url="https://cdn/a.png"),
        E.downloaded("a", request_id="r2", file="images/a.png", sha256="00" * 32, bytes=1234, width=512),
        E.recovered("b", request_id="r0", how="history-body-match", submitted_at="2026-01-02T03:04:05.000Z"),
        # An image of earlier parameters, kept aside: not the item's current file, which stays.
        E.superseded("a", file="images/a~superseded-0123abcd.jpg", was="images/a.jpg", params_sha="0123abcd",
                     sha256="11" * 32, bytes=99),
        E.run_end(exit_code=0, reason=None, counts={"downloaded": 1}, spent_usd=0.1),
    ]


def write_all(path: Path) -> list[dict]:
    led = Ledger(path, fsync_interval=0.0)
    led.open()
    for event in every_builder():
        led.write(event)
    led.close()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_kind_has_a_builder_and_the_fold_knows_it() -> None:
    built = {e.kind for e in every_builder()}
    assert built == set(EventKind)
    for kind in EventKind:
        assert callable(getattr(E, kind.value)), kind
        apply(L.LedgerState(), {"event": kind.value, "item": "x"})  # no kind falls through the match


def test_the_engine_names_every_kind_it_writes_through_the_enum() -> None:
    """Ledger.append refuses an unknown kind: the engine spells kinds as EventKind members, never as text."""
    named: set[str] = set()
    for source in ENGINE.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert not re.findall(r'\b(?:record|append)\(\s*"[a-z_]+"', text), f"{source}: an event kind as a string"
        named |= set(re.findall(r"EventKind\.([A-Z_]+)", text))
    assert named, "the scan found no event the engine writes: the pattern is out of date"
    assert named <= {k.name for k in EventKind}, named - {k.name for k in EventKind}


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_lines_carry_the_same_plain_strings_with_either_encoder(tmp_path, monkeypatch, encoder) -> None:
    if encoder == "stdlib":
        monkeypatch.setattr(fastjson, "dumps", fastjson._std_dumps)
    raw = write_all(tmp_path / "ledger.jsonl")
    text = (tmp_path / "ledger.jsonl").read_text(encoding="utf-8")
    assert [ev["event"] for ev in raw] == [e.kind.value for e in every_builder()]
    assert '"stage":"download"' in text and "EventKind" not in text and "Stage." not in text
    assert "café ☕ 東京" in text  # UTF-8, not \\u escapes
    failed = raw[9]
    assert failed == {**failed, "stage": "download", "retryable": True, "output_url": "https://cdn/a.png"}
    assert "status" not in failed and "uncertain" not in failed  # None and False flags are left out
    assert raw[2]["uncertain"] is True and "wait_s" not in raw[2]
    assert "height" not in raw[10] and raw[10]["width"] == 512
    assert raw[-1]["counts"] == {"downloaded": 1} and "reason" not in raw[-1]


def test_typed_and_untyped_writes_give_the_same_lines(tmp_path) -> None:
    typed = write_all(tmp_path / "typed.jsonl")
    led = Ledger(tmp_path / "plain.jsonl", fsync_interval=0.0)
    led.open()
    for e in every_builder():
        led.append(e.kind.value, e.item, **e.fields)  # how the engine writes today: a string and kwargs
    led.close()
    plain = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [{k: v for k, v in ev.items() if k != "ts"} for ev in typed] == [
        {k: v for k, v in ev.items() if k != "ts"} for ev in plain
    ]
    st = replay(tmp_path / "typed.jsonl")
    a = st.items["a"]
    assert (a.state, a.submits, a.intents, a.expired, a.uncertain, a.file) == (
        Phase.DOWNLOADED, 2, 3, 1, 1, "images/a.png")
    assert st.runs == 1 and st.spent_usd == pytest.approx(0.1) and list(st.latencies) == [1.5]


def test_the_live_state_equals_a_replay(tmp_path) -> None:
    led = Ledger(tmp_path / "ledger.jsonl", fsync_interval=0.0)
    led.open()
    for e in every_builder():
        led.write(e)
    led.close()
    assert replay(tmp_path / "ledger.jsonl") == led.state


def test_an_unknown_kind_is_refused_on_write_and_ignored_on_read(tmp_path) -> None:
    led = Ledger(tmp_path / "ledger.jsonl", fsync_interval=0.0)
    led.open()
    with pytest.raises(ValueError):
        led.append("submited", "a", request_id="r1")
    led.close()
    assert (tmp_path / "ledger.jsonl").read_text() == ""
    st = fold([{"event": "a_newer_kind", "item": "b"}, {"event": ["not", "a", "kind"], "item": "c"}])
    assert st.items["b"].state == Phase.PENDING and st.items["c"].state == Phase.PENDING


def test_builders_refuse_a_stage_that_does_not_exist() -> None:
    with pytest.raises(ValueError):
        E.failed("a", stage="generation", error="x", retryable=False)  # type: ignore[arg-type]


def test_old_state_names_are_the_enum_and_read_as_their_strings() -> None:
    assert [L.PENDING, L.INTENT, L.SUBMITTED, L.COMPLETED, L.DOWNLOADED, L.FAILED] == list(Phase)
    assert L.DOWNLOADED is Phase.DOWNLOADED and L.DOWNLOADED == "downloaded"
    assert f"{Phase.FAILED} {EventKind.RUN_END} {Stage.POLL}" == "failed run_end poll"
    assert {"downloaded": 1}[Phase.DOWNLOADED] == 1
    assert EventKind.of("intent") is EventKind.INTENT and EventKind.of("nope") is None and EventKind.of(3) is None


def test_status_json_has_plain_string_keys(tmp_path) -> None:
    write_all(tmp_path / "ledger.jsonl")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    s = summarize(tmp_path)
    assert all(type(k) is str for k in s["states"])
    assert orjson.loads(orjson.dumps(s))["states"]["downloaded"] == 1  # orjson refuses enum keys
