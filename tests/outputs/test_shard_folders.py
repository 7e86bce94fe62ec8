"""Readers of a sharded folder (status, catalog, ledger repair) take every shard's ledger as one history."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from batchgen.cli import commands
from batchgen.outputs.catalog import load_catalog
from batchgen.outputs.status import format_summary, summarize
from batchgen.sandbox.images import render_png
from batchgen.store.shards import image_bucket

T = "2026-05-01T12:00:00.000Z"
PNG = render_png("a shard's picture", 1, 32, 32)


def put(path: Path, events: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"ts": T, "item": None, **e}) + "\n" for e in events))


def downloaded(out: Path, item: str, rid: str) -> list[dict]:
    rel = f"images/{image_bucket(item)}/{item}.png"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(PNG)
    return [
        {"item": item, "event": "intent", "params_sha": "s", "attempt": 1, "params": {"prompt": item}},
        {"item": item, "event": "submitted", "request_id": rid},
        {"item": item, "event": "completed", "request_id": rid, "output_url": f"https://cdn/{rid}.png", "cost_usd": 0.1},
        {"item": item, "event": "downloaded", "request_id": rid, "file": rel,
         "sha256": hashlib.sha256(PNG).hexdigest(), "bytes": len(PNG)},
    ]


def start(items: int) -> dict:
    return {"event": "run_start", "pid": 1, "items": items, "pending": items}


def end(code: int, reason: str | None = None) -> dict:
    return {"event": "run_end", "exit_code": code, "reason": reason, "counts": {}, "spent_usd": 0}


def sharded_folder(out: Path) -> None:
    """Three shards: 0 finished, 1 was killed mid-run, 2 stopped by its budget; plus older unsharded history."""
    put(out / "ledger.jsonl", [start(9), *downloaded(out, "early", "r0"), end(3, "budget reached")])
    put(out / "ledger.shard-0000-of-0003.jsonl", [start(3), *downloaded(out, "a", "ra"), *downloaded(out, "b", "rb"),
                                                  end(0)])
    put(out / "ledger.shard-0001-of-0003.jsonl", [start(3), *downloaded(out, "c", "rc"),
                                                  {"item": "d", "event": "intent", "params_sha": "s", "attempt": 1}])
    put(out / "ledger.shard-0002-of-0003.jsonl", [start(3), *downloaded(out, "e", "re"), end(3, "budget reached")])


def test_status_folds_every_shard_and_shows_the_one_to_look_at(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sharded_folder(out)
    s = summarize(out)
    assert s["items"] == 9 and s["ledger_items"] == 6  # early, a, b, c, d, e
    assert s["states"] == {"pending": 3, "intent": 1, "submitted": 0, "completed": 0, "downloaded": 5, "failed": 0}
    assert s["spent_usd"] == 0.5 and s["paid_submits"] == 5 and s["runs"] == 4 and s["missing_files"] == []
    # Shard 1 ended without a line: it needs attention before the others' endings.
    assert s["last_run"]["ended"].startswith("killed or crashed") and s["last_exit_code"] is None
    sh = s["shards"]
    assert (sh["count"], sh["found"], sh["missing"], sh["unsharded_ledger"]) == (3, [0, 1, 2], [], True)
    assert [(p["shard"], p["items"], p["runs"]) for p in sh["ledgers"]] == [(None, 9, 1), (0, 3, 1), (1, 3, 1), (2, 3, 1)]
    text = format_summary(s)
    assert "3 of 3 shards have a ledger; ledger.jsonl holds the folder's unsharded history" in text
    assert "shard 1 of 3: last run killed or crashed" in text and "shard 2 of 3: last run aborted — budget reached" in text
    assert "shard 0 of 3:" not in text


def test_status_of_shards_still_running_and_not_yet_started(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out / "ledger.shard-0000-of-0004.jsonl", [start(5), *downloaded(out, "a", "ra"), end(0)])
    put(out / "ledger.shard-0002-of-0004.jsonl", [start(4)])
    fd = os.open(out / ".lock.shard-0002-of-0004", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        s = summarize(out)
    finally:
        os.close(fd)
    assert s["items"] == 9 and s["states"]["pending"] == 8 and s["states"]["downloaded"] == 1
    assert s["last_run"]["ended"] == "running" and s["running_pid"] == os.getpid()
    assert s["shards"]["found"] == [0, 2] and s["shards"]["missing"] == [1, 3]
    text = format_summary(s)
    assert "2 of 4 shards have a ledger (no ledger yet: shard 1, 3)" in text
    assert f"shard 2 of 4 is running (pid {os.getpid()})" in text


def test_an_unsharded_folder_says_nothing_of_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out / "ledger.jsonl", [start(1), *downloaded(out, "a", "ra"), end(0)])
    s = summarize(out)
    assert s["shards"] is None and "shard" not in format_summary(s).split(":", 1)[1]


def test_exports_and_the_report_see_every_shards_images(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sharded_folder(out)
    cat = load_catalog(out)
    assert sorted(r.id for r in cat.downloaded()) == ["a", "b", "c", "e", "early"]
    assert cat.runs == 4 and cat.paid_submits == 5 and abs(cat.spent_usd - 0.5) < 1e-9
    assert cat.records["d"].state == "intent" and cat.image(cat.records["c"]) == out / "images" / image_bucket("c") / "c.png"


def test_ledger_repair_repairs_every_shards_ledger(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    sharded_folder(out)
    bad = out / "ledger.shard-0002-of-0003.jsonl"
    lines = bad.read_text().splitlines(keepends=True)
    bad.write_text(lines[0] + "not json\n" + "".join(lines[1:]))
    assert commands.main(["ledger", "repair", str(out)]) == 0
    said = capsys.readouterr().out
    assert "moved 1 unreadable line(s) to" in said and "ledger.shard-0002-of-0003.rejected.jsonl" in said
    assert said.count("nothing to repair") == 3
    assert bad.read_text() == "".join(lines)
    assert json.loads((out / "ledger.shard-0002-of-0003.rejected.jsonl").read_text())["raw"] == "not json"
    assert summarize(out)["states"]["downloaded"] == 5
