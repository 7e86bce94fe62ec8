"""Ledger: append and replay, the fold of item states, torn and corrupt lines, repair."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.store.ledger import Ledger, LedgerCorrupt, fold, readable_events, repair, replay


def open_ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "ledger.jsonl", fsync_interval=0.0)
    led.open()
    return led


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines()]


def test_append_then_replay_round_trip(tmp_path):
    led = open_ledger(tmp_path)
    led.append("run_start", None, manifest="m.yaml")
    led.append("intent", "fox", params_sha="abc")
    led.append("submitted", "fox", request_id="r1")
    led.append("completed", "fox", request_id="r1", output_url="https://cdn/x.png", cost_usd=0.08)
    led.append("downloaded", "fox", file="images/fox.png", sha256="00" * 32, bytes=1234, width=None)
    led.close()

    raw = lines(tmp_path / "ledger.jsonl")
    assert [e["event"] for e in raw] == ["run_start", "intent", "submitted", "completed", "downloaded"]
    assert "width" not in raw[-1]  # None fields are left out
    st = replay(tmp_path / "ledger.jsonl")
    assert st == led.state
    fox = st.items["fox"]
    assert fox.state == "downloaded"
    assert fox.request_id == "r1"
    assert fox.output_url == "https://cdn/x.png"
    assert (fox.file, fox.sha256, fox.bytes) == ("images/fox.png", "00" * 32, 1234)
    assert fox.params_sha == "abc"
    assert st.runs == 1 and st.lines == 5


def test_ts_is_iso8601_utc(tmp_path):
    led = open_ledger(tmp_path)
    ev = led.append("intent", "a")
    led.close()
    (line,) = lines(tmp_path / "ledger.jsonl")
    assert line["ts"] == ev["ts"]
    dt = datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert dt.utcoffset().total_seconds() == 0
    assert line["ts"].endswith("Z")
    assert abs((datetime.now(UTC) - dt).total_seconds()) < 3600


def ev(event: str, item: str = "a", ts: str = "2026-03-01T12:00:00.000Z", **kw) -> dict:
    return {"ts": ts, "item": item, "event": event, **kw}


def test_fold_happy_path_states():
    st = fold([ev("intent")])
    assert st.items["a"].state == "intent"
    st = fold([ev("intent"), ev("submitted", request_id="r1", ts="2026-03-01T12:00:05.000Z")])
    a = st.items["a"]
    assert a.state == "submitted" and a.request_id == "r1" and a.submits == 1
    assert a.submitted_ts == datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC).timestamp()
    st = fold([ev("intent"), ev("submitted", request_id="r1"), ev("completed", output_url="u")])
    assert st.items["a"].state == "completed" and st.items["a"].paid
    st = fold(
        [
            ev("intent"),
            ev("submitted", request_id="r1"),
            ev("completed", output_url="u"),
            ev("downloaded", file="images/a.png"),
        ]
    )
    assert st.items["a"].state == "downloaded"


def test_fold_expired_goes_back_to_pending_and_is_counted():
    st = fold([ev("intent"), ev("submitted", request_id="r1"), ev("expired", request_id="r1")])
    a = st.items["a"]
    assert a.state == "pending" and a.request_id is None and a.expired == 1
    st = fold(
        [
            ev("intent"),
            ev("submitted", request_id="r1"),
            ev("expired"),
            ev("intent"),
            ev("submitted", request_id="r2"),
        ]
    )
    a = st.items["a"]
    assert a.state == "submitted" and a.request_id == "r2" and a.submits == 2 and a.uncertain == 0


def test_fold_submit_retry_returns_intent_to_pending():
    st = fold([ev("intent"), ev("submit_retry", error="HTTP 429")])
    a = st.items["a"]
    assert a.state == "pending" and a.uncertain == 0
    st = fold([ev("intent"), ev("submit_retry", error="timeout", uncertain=True)])
    assert st.items["a"].state == "pending" and st.items["a"].uncertain == 1


def test_fold_failed_keeps_reason_and_retryability():
    st = fold(
        [
            ev("intent"),
            ev("submitted", request_id="r1"),
            ev("completed", output_url="u"),
            ev("failed", error="download: HTTP 503", retryable=True),
        ]
    )
    a = st.items["a"]
    assert a.state == "failed" and a.retryable and a.error == "download: HTTP 503"
    assert a.output_url == "u"  # still known: the next run can download it without paying again
    st = fold([ev("intent"), ev("failed", error="HTTP 400: bad value")])
    assert st.items["a"].state == "failed" and not st.items["a"].retryable


def test_intent_after_intent_counts_an_uncertain_submit():
    st = fold([ev("intent"), ev("intent"), ev("submitted", request_id="r1")])
    a = st.items["a"]
    assert a.uncertain == 1 and a.intents == 2 and a.state == "submitted"
    st = fold([ev("intent"), ev("intent"), ev("intent")])
    assert st.items["a"].uncertain == 2


def test_spend_is_summed_from_cost_usd():
    st = fold(
        [
            ev("completed", item="a", cost_usd=0.08),
            ev("completed", item="b", cost_usd=0.08),
            ev("completed", item="c"),
            ev("completed", item="d", cost_usd="0.08"),  # not a number: unknown, not guessed
        ]
    )
    assert st.spent_usd == pytest.approx(0.16)
    assert st.completed_without_cost == 2
    assert st.items["a"].cost_usd == 0.08


def test_unknown_events_are_ignored():
    st = fold([ev("intent"), ev("some_future_event", detail=1), ev("submitted", request_id="r")])
    assert st.items["a"].state == "submitted"


def test_torn_last_line_is_tolerated_and_cut_on_open(tmp_path):
    path = tmp_path / "ledger.jsonl"
    good = json.dumps(ev("intent")) + "\n" + json.dumps(ev("submitted", request_id="r1")) + "\n"
    path.write_text(good + '{"ts":"2026-03-01T12:00:09.000Z","item":"a","ev', encoding="utf-8")

    st = replay(path)
    assert st.torn_tail and st.items["a"].state == "submitted"

    led = Ledger(path, fsync_interval=0.0)
    led.open()
    led.append("completed", "a", output_url="https://cdn/a.png")
    led.close()
    assert path.read_text(encoding="utf-8").startswith(good)
    assert [e["event"] for e in lines(path)] == ["intent", "submitted", "completed"]
    assert replay(path).items["a"].state == "completed"


def test_last_line_without_newline_does_not_swallow_the_next_append(tmp_path):
    # A crash can leave a whole JSON object whose newline never reached the disk.
    path = tmp_path / "ledger.jsonl"
    path.write_text(
        json.dumps(ev("intent")) + "\n" + json.dumps(ev("submitted", request_id="r1")), encoding="utf-8"
    )
    led = Ledger(path, fsync_interval=0.0)
    led.open()
    led.append("completed", "a", output_url="https://cdn/a.png")
    led.close()
    st = replay(path)
    assert not st.torn_tail
    assert [e["event"] for e in lines(path)] == ["intent", "submitted", "completed"]
    assert st.items["a"].request_id == "r1" and st.items["a"].state == "completed"


def test_corrupt_middle_line_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(
        json.dumps(ev("intent")) + "\n" + "garbage{{\n" + json.dumps(ev("submitted", request_id="r1")) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(LedgerCorrupt) as ei:
        replay(path)
    assert ei.value.line == 2
    assert ":2:" in str(ei.value) and "repair" in str(ei.value)
    with pytest.raises(LedgerCorrupt):
        Ledger(path)


def test_repair_moves_bad_lines_aside_and_keeps_the_rest_in_order(tmp_path):
    path = tmp_path / "ledger.jsonl"
    events = [ev("intent", item="a"), ev("intent", item="b"), ev("submitted", item="a", request_id="r1")]
    path.write_text(
        json.dumps(events[0])
        + "\n"
        + "garbage{{\n"
        + json.dumps(events[1])
        + "\n"
        + "[1,2]\n"
        + json.dumps(events[2])
        + "\n"
        + '{"torn',
        encoding="utf-8",
    )
    moved, aside = repair(path)
    assert moved == 3
    assert aside == tmp_path / "ledger.rejected.jsonl"
    assert lines(path) == events
    rejected = lines(aside)
    assert [r["line"] for r in rejected] == [2, 4, 6]
    assert rejected[0]["raw"] == "garbage{{"
    st = replay(path)
    assert st.items["a"].state == "submitted" and st.items["b"].state == "intent"


def test_repair_of_a_clean_ledger_changes_nothing(tmp_path):
    path = tmp_path / "ledger.jsonl"
    text = json.dumps(ev("intent")) + "\n"
    path.write_text(text, encoding="utf-8")
    assert repair(path) == (0, None)
    assert path.read_text(encoding="utf-8") == text
    assert not (tmp_path / "ledger.rejected.jsonl").exists()


def test_missing_ledger_replays_empty(tmp_path):
    st = replay(tmp_path / "nope.jsonl")
    assert st.items == {} and st.lines == 0


def test_append_before_open_is_refused(tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(RuntimeError):
        led.append("intent", "a")


def test_learned_completion_times_survive_into_the_next_run(tmp_path):
    # A resume should poll as well from its first request as the run before it did at its end.
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    led.open()
    for i, ready in enumerate([20.5, 21.0, 22.4]):
        led.append("completed", f"item-{i}", request_id=f"r{i}", output_url="https://x/y.png", ready_s=ready)
    led.append("completed", "item-3", request_id="r3", output_url="https://x/z.png")  # no sample
    led.close()
    assert list(replay(path).latencies) == [20.5, 21.0, 22.4]


def test_readers_share_replays_rules_torn_tail_skipped_corrupt_middle_refused(tmp_path):
    from batchgen.outputs.status import summarize
    from batchgen.store.ledger import readable_events

    led = open_ledger(tmp_path)
    led.append("run_start", None, items=1)
    led.append("intent", "a", params_sha="x")
    led.close()
    path = tmp_path / "ledger.jsonl"
    with open(path, "a") as f:
        f.write('{"ts": "2026-01-01T00:00:00Z", "item": "a", "ev')  # a crash mid-write
    assert [ev["event"] for ev in readable_events(path)] == ["run_start", "intent"]
    assert summarize(tmp_path)["torn_tail"] is True

    with open(path, "a") as f:
        f.write('\n{"ts": "2026-01-01T00:00:01Z", "item": "a", "event": "submitted", "request_id": "r"}\n')
    with pytest.raises(LedgerCorrupt) as err:
        list(readable_events(path))
    assert err.value.line == 3


# ----------------------------------------------------------------------------- lines read from bytes


def _as_read_before(path: Path) -> list[dict | None]:
    """Each line decoded (a bad byte replaced) and then parsed: how lines were always read."""
    from batchgen.core import fastjson

    out: list[dict | None] = []
    for raw in path.read_bytes().splitlines(keepends=True):
        try:
            ev = fastjson.loads(raw.decode("utf-8", errors="replace"))
        except ValueError:
            ev = None
        out.append(ev if isinstance(ev, dict) else None)
    return out


ODD_LINES = [
    b'{"ts":"2026-01-01T00:00:00.000Z","item":"caf\xe9","event":"intent","params_sha":"a"}\n',  # not UTF-8
    b'{"ts":"2026-01-01T00:00:00.000Z","item":"b","event":"completed","ready_s":NaN}\n',  # stdlib only
    b'{"ts":"2026-01-01T00:00:00.000Z","item":"\\ud800","event":"intent"}\n',  # a lone surrogate
    b'{"ts":"2026-01-01T00:00:00.000Z","item":"c","event":"downloaded","bytes":123456789012345678901234}\n',
    b'\xef\xbb\xbf{"ts":"2026-01-01T00:00:00.000Z","item":"d","event":"intent"}\n',
    b'{"ts":"2026-01-01T00:00:00.000Z","item":"e","event":"submitted","request_id":"r"}\n',
]


@pytest.mark.parametrize("line", ODD_LINES)
def test_a_line_reads_as_it_did_when_every_line_was_decoded_first(tmp_path, line):
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(ODD_LINES[-1] + line + ODD_LINES[-1])
    before = _as_read_before(path)
    if before[1] is None:
        with pytest.raises(LedgerCorrupt):
            replay(path)
        return
    state = replay(path)
    assert state.lines == 3
    state.lines = 0  # the one field a fold of events leaves alone
    assert state == fold(before)  # type: ignore[arg-type]
    assert list(readable_events(path)) == before


# ----------------------------------------------------------------------------- the compact item state

_FILES = st.one_of(
    st.none(), st.integers(), st.text(max_size=30),
    st.builds(lambda folder, stem, ext: f"images/{folder}{stem}{ext}",
              st.sampled_from(["", "3f/", "a0/", "A0/", "3g/", "3f", "/", "3f//", "abc/"]),
              st.sampled_from(["fox", "fox.png", "Fox", "fo", "foxx", ""]),
              st.sampled_from([".png", ".PNG", ".jpg", ".jpeg", ".webp", ".gif", "", ".png.png", "/x.png"])),
)
_SHAS = st.one_of(
    st.none(), st.integers(), st.text(max_size=70),
    st.text(alphabet="0123456789abcdefABCDEF ", min_size=64, max_size=64),
    st.binary(min_size=32, max_size=32).map(bytes.hex),
)


@settings(max_examples=500, deadline=None)
@given(_FILES, _SHAS)
def test_an_item_state_gives_back_the_file_and_sha256_it_was_given(file, sha):
    from batchgen.store.itemstate import ItemState

    state = ItemState("fox", file=file, sha256=sha)
    assert (state.file, state.sha256) == (file, sha)
    assert type(state.file) is type(file) and type(state.sha256) is type(sha)
    again = ItemState("fox")
    again.file, again.sha256 = file, sha
    assert again == state and repr(again) == repr(state)
    assert f"file={file!r}, sha256={sha!r}" in repr(state)
    again.bytes = -1
    assert again != state


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fox", "owl", "a0", "caf\u00e9"]), _FILES, _SHAS, st.integers(0, 9)),
                min_size=1, max_size=12))
def test_a_replay_keeps_each_items_last_file_and_sha256_as_written(downloads):
    import json
    import tempfile

    from batchgen.store.shards import image_bucket

    lines, last = [], {}
    for item, file, sha, b in downloads:
        if isinstance(file, str) and file.startswith("images/") and b % 3 == 0:
            file = f"images/{image_bucket(item)}/{item}.png"  # the usual name, as the downloader writes it
        ev = {"ts": "2026-01-01T00:00:00.000Z", "item": item, "event": "downloaded", "request_id": "r",
              "file": file, "sha256": sha, "bytes": b}
        lines.append(json.dumps(ev, ensure_ascii=False))
        last[item] = (file, sha, b)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ledger.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        state = replay(path)
        assert state.items == fold(readable_events(path)).items and state.lines == len(lines)
    assert {name: (s.file, s.sha256, s.bytes) for name, s in state.items.items()} == last
