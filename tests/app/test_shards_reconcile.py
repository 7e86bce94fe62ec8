"""Reconcile over a sharded folder: every shard's ledger is the folder's side, and an adopted request
is written to the ledger of the item's shard, where that shard's next run reads it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchgen.api.outcomes import HistoryRow
from batchgen.app.reconcile import adopt, match, read_folder
from batchgen.app.shards import replay_ledgers
from batchgen.store.shards import Shard, ledger_name, shard_of

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
FOX = {"prompt": "a fox", "seed": 101}
HEN = {"prompt": "a hen", "seed": 102}


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def put(path: Path, lines: list[tuple[float, dict[str, Any]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"ts": at(t), "item": None, **e}) + "\n" for t, e in lines))


def row(rid: str, body: dict[str, Any], seconds: float) -> HistoryRow:
    return HistoryRow(rid, "COMPLETED", "ideogram-txt-2-img", 0.1, body, f"https://cdn/{rid}.png",
                      created=T0 + timedelta(seconds=seconds))


def two_shards(out: Path) -> tuple[Shard, Shard]:
    """``fox`` and ``hen`` in shards 0 and 1 of 2; fox's answer was lost, hen finished; shard 1 ran
    again later (its run_start must not close fox's intent, which another process sent)."""
    fox, hen = Shard(shard_of("fox", 2), 2), Shard(shard_of("hen", 2), 2)
    assert fox != hen
    put(out / ledger_name(fox), [
        (0, {"event": "run_start", "pid": 1, "items": 1, "pending": 1}),
        (10, {"item": "fox", "event": "intent", "params_sha": "s", "attempt": 1, "params": FOX}),
    ])
    put(out / ledger_name(hen), [
        (0, {"event": "run_start", "pid": 2, "items": 1, "pending": 1}),
        (5, {"item": "hen", "event": "intent", "params_sha": "s", "attempt": 1, "params": HEN}),
        (6, {"item": "hen", "event": "submitted", "request_id": "rh"}),
        (9, {"item": "hen", "event": "completed", "request_id": "rh", "output_url": "https://cdn/rh.png", "cost_usd": 0.1}),
        (100, {"event": "run_start", "pid": 3, "items": 1, "pending": 0}),
    ])
    return fox, hen


def test_every_shards_ledger_is_read_and_each_keeps_its_own_runs(tmp_path: Path) -> None:
    fox, _ = two_shards(tmp_path)
    folder = read_folder(tmp_path)
    assert folder.known == {"rh": "hen"} and folder.charged == {"rh": "hen"}
    assert [i.item for i in folder.intents] == ["hen", "fox"]  # in the order they were written, across ledgers
    assert folder.intents[1].until is None  # still open: no run of fox's shard started since
    report = match(folder, [row("rh", HEN, 7), row("lost", FOX, 500)])  # after the other shard's restart + skew
    assert [e["item"] for e in report.not_in_ledger] == ["fox"] and report.billed_usd == 0.2


def test_an_adopted_request_lands_in_its_shards_ledger_and_that_shard_resumes_from_it(tmp_path: Path) -> None:
    fox, hen = two_shards(tmp_path)
    hen_before = (tmp_path / ledger_name(hen)).read_text()
    report = match(read_folder(tmp_path), [row("rh", HEN, 7), row("lost", FOX, 20)])
    assert adopt(tmp_path, report) == 1
    assert (tmp_path / ledger_name(hen)).read_text() == hen_before
    assert not (tmp_path / "ledger.jsonl").exists()
    state = replay_ledgers(tmp_path, fox)
    assert (state.items["fox"].state, state.items["fox"].output_url) == ("completed", "https://cdn/lost.png")
