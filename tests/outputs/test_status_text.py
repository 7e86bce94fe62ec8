"""`status` tells whether a run holds the folder, how the last run ended, and failures grouped by reason."""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

from batchgen.cli import commands
from batchgen.outputs.status import format_summary, summarize
from tests.support.cli import wait_for, write_manifest

T = "2026-11-27T01:00:00.000Z"


def _ledger(out: Path, events: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger.jsonl").write_text("".join(json.dumps({"ts": T, "item": None, **e}) + "\n" for e in events))


def _failed(item: str, error: str, retryable: bool = False) -> list[dict]:
    return [
        {"item": item, "event": "intent", "params": {"prompt": item}, "params_sha": "0" * 16, "attempt": 1},
        {"item": item, "event": "submitted", "request_id": f"r-{item}"},
        {"item": item, "event": "failed", "stage": "generate", "request_id": f"r-{item}", "error": error,
         "retryable": retryable},
    ]


def test_a_run_holding_the_folder_is_reported_with_its_pid(tmp_path):
    out = tmp_path / "out"
    _ledger(out, [{"event": "run_start", "pid": os.getpid(), "items": 3, "pending": 3}])
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        s = summarize(out)
        assert s["running_pid"] == os.getpid()
        assert s["last_run"]["ended"] == "running"
        assert f"a run holds this folder now (pid {os.getpid()})" in format_summary(s)
    finally:
        os.close(fd)
    s = summarize(out)
    assert s["running_pid"] is None
    assert s["last_run"]["ended"].startswith("killed or crashed")
    assert "last run: killed or crashed" in format_summary(s)


def test_status_never_takes_the_lock_it_looks_at(tmp_path, monkeypatch):
    """Even a shared flock for an instant would make a run starting then believe the folder is taken."""
    out = tmp_path / "out"
    _ledger(out, [{"event": "run_start", "pid": 1, "items": 1, "pending": 1}])
    (out / ".lock").write_text("")
    taken: list[tuple] = []
    monkeypatch.setattr(fcntl, "flock", lambda *args: taken.append(args))
    summarize(out)
    assert taken == []


def test_how_the_last_run_ended_is_said_in_words(tmp_path):
    cases = {0: "last run: finished", 1: "last run: finished with failed items", 130: "last run: interrupted",
             3: "last run: aborted — budget reached: --max-images 5 images submitted"}
    for code, said in cases.items():
        out = tmp_path / f"out{code}"
        reason = "budget reached: --max-images 5 images submitted" if code == 3 else None
        _ledger(out, [{"event": "run_start", "pid": 1, "items": 0, "pending": 0},
                      {"event": "run_end", "exit_code": code, "reason": reason, "counts": {}, "spent_usd": 0}])
        s = summarize(out)
        assert s["last_run"]["exit_code"] == code
        assert said in format_summary(s)


def test_failures_are_grouped_by_reason_with_counts(tmp_path):
    out = tmp_path / "out"
    events: list[dict] = [{"event": "run_start", "pid": 1, "items": 53, "pending": 53}]
    for n in range(50):
        events += _failed(f"poster-{n:02d}", "generation FAILED: content filter (request r-x)")
    events += _failed("a", "HTTP 500: boom", retryable=True)
    events += _failed("b", "HTTP 500: boom", retryable=True)
    events += _failed("c", "HTTP 400: bad seed")
    _ledger(out, events)
    text = format_summary(summarize(out))
    failed = [line for line in text.splitlines() if line.strip().startswith("failed ")]
    assert len(failed) == 3, text
    assert failed[0].strip().startswith("failed 50 × generation FAILED: content filter (poster-00, poster-01, poster-02, ...)")
    assert "failed 2 × HTTP 500: boom (a, b) [retried by the next run]" in text
    assert "failed 1 × HTTP 400: bad seed (c)" in text


def test_items_the_last_manifest_did_not_have_are_counted_apart(tmp_path):
    out = tmp_path / "out"
    events: list[dict] = []
    for n in range(4):
        events += _failed(f"old-{n}", "x")
    events.append({"event": "run_start", "pid": 1, "items": 1, "pending": 1})
    events += _failed("new", "x")
    _ledger(out, events)
    s = summarize(out)
    assert s["items"] == 1 and s["ledger_items"] == 5
    assert "the ledger also holds 4 item(s) the last run's manifest did not have" in format_summary(s)


async def test_a_run_says_what_it_starts_on_at_once(sandbox_factory, start_cli, tmp_path):
    sb = await sandbox_factory(latency=60.0)
    manifest = write_manifest(tmp_path / "m.yaml", 3)
    out = tmp_path / "out"
    w = await start_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--rpm", "50")
    await wait_for(lambda: b"starting:" in w.out_path.read_bytes(), what="the start line")
    line = next(x for x in w.out_path.read_text().splitlines() if x.startswith("starting:"))
    assert "3 items, 3 to do" in line and str(out) in line and "50 requests/min" in line
    assert not (out / "images").exists() or not any((out / "images").glob("*.png"))  # said before any result
    w.signal(signal.SIGINT)
    r = await w.wait()
    assert r.code == 130
    assert commands.main(["status", str(out)]) == 0
