"""Shards in one process: which items a shard owns, its flags and limits, its ledger and its locks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from batchgen.app.runner import RunOptions, prepare
from batchgen.app.shards import folder_lock, home_ledger, replay_ledgers, resolve_shard, shard_limits
from batchgen.core.errors import ExitCode, UserError
from batchgen.engine.config import RunConfig
from batchgen.store.lock import output_lock
from batchgen.store.shards import Shard, found_ledgers, image_bucket, ledger_name, lock_name, shard_of
from tests.support.cli import manifest_ids, write_manifest

T = "2026-05-01T12:00:00.000Z"


def put(path: Path, events: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"ts": T, **e}) + "\n" for e in events))
    return path


# ---- the hashes are part of the folder format -------------------------------------------------


def test_the_hashes_never_change() -> None:
    """Pinned: a different answer would move images and hand items to a ledger that never saw them."""
    assert [image_bucket(i) for i in ("img-000", "fox", "café ☕ 東京")] == ["ec", "77", "f0"]
    assert [shard_of("img-000", n) for n in (3, 8, 1000)] == [2, 3, 403]
    assert [shard_of("fox", n) for n in (3, 8, 1000)] == [0, 0, 520]
    assert [shard_of("café ☕ 東京", n) for n in (3, 8, 1000)] == [0, 2, 282]


def test_items_spread_evenly_over_shards_and_image_folders() -> None:
    ids = manifest_ids(900, prefix="spread")
    per_shard = Counter(shard_of(i, 3) for i in ids)
    assert sorted(per_shard) == [0, 1, 2] and min(per_shard.values()) > 250
    assert len({image_bucket(i) for i in ids}) > 240


# ---- flags and the scheduler's variables ------------------------------------------------------


def test_the_index_comes_from_the_flag_then_kubernetes_then_aws_batch() -> None:
    both = {"JOB_COMPLETION_INDEX": "2", "AWS_BATCH_JOB_ARRAY_INDEX": "1"}
    assert resolve_shard(0, 4, both) == Shard(0, 4)
    assert resolve_shard(None, 4, both) == Shard(2, 4)
    assert resolve_shard(None, 4, {"AWS_BATCH_JOB_ARRAY_INDEX": "1"}) == Shard(1, 4)
    assert resolve_shard(None, 4, {"JOB_COMPLETION_INDEX": "", "AWS_BATCH_JOB_ARRAY_INDEX": "3"}) == Shard(3, 4)
    assert resolve_shard(None, None, both) is None  # the variables alone shard nothing
    assert resolve_shard(None, 1, {"JOB_COMPLETION_INDEX": "0"}) is None  # one shard: the whole folder


@pytest.mark.parametrize(("index", "count", "env", "said"), [
    (3, 3, {}, "--shard-index 3 is out of range"),
    (-1, 3, {}, "out of range"),
    (0, 0, {}, "--shard-count must be 1 or more"),
    (None, 3, {"JOB_COMPLETION_INDEX": "٣"}, "is not a shard index"),
    (None, 3, {"JOB_COMPLETION_INDEX": "-1"}, "is not a shard index"),
    (None, 3, {"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, "AWS_BATCH_JOB_ARRAY_INDEX 3 is out of range"),
    (None, 3, {}, "needs --shard-index"),
    (1, None, {}, "--shard-index needs --shard-count"),
])
def test_bad_values_are_user_errors(index, count, env, said) -> None:
    with pytest.raises(UserError, match=said) as caught:
        resolve_shard(index, count, env)
    assert caught.value.code == ExitCode.BAD_INPUT and "\n" not in str(caught.value)


# ---- limits -----------------------------------------------------------------------------------


def test_rpm_is_the_keys_total_unless_each_shard_has_its_own() -> None:
    cfg = RunConfig(slug="m", price_usd=0.1, rpm=50.0, max_images=10, max_cost_usd=1.0)
    shares = [shard_limits(cfg, Shard(i, 3)) for i in range(3)]
    assert [s.rpm for s in shares] == [pytest.approx(50 / 3)] * 3
    assert [s.max_images for s in shares] == [4, 3, 3] and sum(s.max_images for s in shares) == 10
    assert all(s.max_cost_usd == pytest.approx(1 / 3, abs=1e-6) and s.max_cost_usd <= 1 / 3 for s in shares)
    assert shard_limits(cfg, Shard(1, 3), rpm_per_shard=True).rpm == 50.0
    assert shard_limits(cfg, None) is cfg
    assert shard_limits(RunConfig(slug="m", price_usd=0.1), Shard(0, 2)).rpm is None


def test_prepare_plans_only_the_shards_items_at_its_share_of_the_rate(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    manifest = write_manifest(tmp_path / "m.yaml", 30, limits="rpm: 60")
    p = prepare(RunOptions(manifest=manifest, out=tmp_path / "out", shard_count=3))
    ids = [it.id for it in p.manifest.items]
    assert ids == [i for i in manifest_ids(30) if shard_of(i, 3) == 1] and p.all_items == 30
    assert p.shard == Shard(1, 3) and p.to_submit == len(ids)
    assert p.cfg.rpm == pytest.approx(20.0)
    own = prepare(RunOptions(manifest=manifest, out=tmp_path / "out", shard_count=3, rpm=30, rpm_per_shard=True))
    assert own.cfg.rpm == 30


# ---- ledgers ----------------------------------------------------------------------------------


def test_only_well_formed_shard_ledgers_are_found(tmp_path: Path) -> None:
    for name in ("ledger.jsonl", "ledger.shard-0002-of-0003.jsonl", "ledger.shard-0000-of-0003.jsonl",
                 "ledger.shard-0001-of-0003.rejected.jsonl", "ledger.shard-3-of-8.jsonl",
                 "ledger.shard-0003-of-0003.jsonl", "ledger.shard-0000-of-0001.jsonl", "ledger.shard-0001-of-0003.jsonl.tmp"):
        (tmp_path / name).write_text("")
    (tmp_path / "ledger.shard-0001-of-0003.jsonl").mkdir()  # not a file
    assert [(s, p.name) for s, p in found_ledgers(tmp_path)] == [
        (None, "ledger.jsonl"),
        (Shard(0, 3), "ledger.shard-0000-of-0003.jsonl"),
        (Shard(2, 3), "ledger.shard-0002-of-0003.jsonl"),
    ]
    assert (ledger_name(Shard(3, 8)), lock_name(Shard(3, 8))) == ("ledger.shard-0003-of-0008.jsonl", ".lock.shard-0003-of-0008")


def test_a_shard_resumes_from_its_items_in_the_unsharded_ledger_then_its_own(tmp_path: Path) -> None:
    shard = Shard(shard_of("fox", 3), 3)
    other = next(i for i in manifest_ids(20) if not shard.owns(i))
    put(tmp_path / "ledger.jsonl", [
        {"item": None, "event": "run_start", "pid": 1, "items": 2, "pending": 2},
        {"item": "fox", "event": "intent", "params_sha": "s", "attempt": 1},
        {"item": "fox", "event": "submitted", "request_id": "r1"},
        {"item": other, "event": "intent", "params_sha": "s", "attempt": 1},
    ])
    put(tmp_path / ledger_name(shard), [
        {"item": "fox", "event": "completed", "request_id": "r1", "output_url": "https://cdn/f.png", "cost_usd": 0.1},
    ])
    (tmp_path / ledger_name(shard)).open("a").write('{"torn')
    state = replay_ledgers(tmp_path, shard)
    assert list(state.items) == ["fox"] and state.items["fox"].state == "completed"
    assert state.items["fox"].submits == 1 and state.spent_usd == pytest.approx(0.1)
    assert state.lines == 2 and state.torn_tail  # of its own file: the one the run appends to


def test_adopted_lines_go_to_the_ledger_of_the_items_shard(tmp_path: Path) -> None:
    put(tmp_path / "ledger.jsonl", [])
    assert home_ledger(tmp_path)("fox") == tmp_path / "ledger.jsonl"
    put(tmp_path / "ledger.shard-0001-of-0003.jsonl", [])
    assert home_ledger(tmp_path)("img-000") == tmp_path / "ledger.shard-0002-of-0003.jsonl"
    put(tmp_path / "ledger.shard-0001-of-0004.jsonl", [])
    with pytest.raises(UserError, match="3 and 4 shards"):
        home_ledger(tmp_path)


# ---- locks ------------------------------------------------------------------------------------


def test_shards_run_side_by_side_but_never_beside_the_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with folder_lock(out, Shard(0, 3)), folder_lock(out, Shard(2, 3)):
        assert (out / "ledger.shard-0000-of-0003.jsonl").is_file()  # claimed for its count at once
        with pytest.raises(UserError, match="running shard 2 of 3") as same:
            with folder_lock(out, Shard(2, 3)):
                pass
        assert same.value.code == ExitCode.ABORTED
        for whole in (lambda: folder_lock(out, None), lambda: output_lock(out)):  # a run; repair, --adopt
            with pytest.raises(UserError, match="another batchgen run is using this output folder") as busy:
                with whole():
                    pass
            assert busy.value.code == ExitCode.ABORTED
    with folder_lock(out, Shard(1, 3)):  # the two ended: another shard starts
        pass
    with pytest.raises(UserError, match="holds ledgers of 3 shards") as other:
        with folder_lock(out, Shard(1, 4)):
            pass
    assert other.value.code == ExitCode.BAD_INPUT
    assert not (out / "ledger.shard-0001-of-0004.jsonl").exists()


def test_no_shard_starts_while_the_whole_folder_is_held(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with folder_lock(out, None):
        with pytest.raises(UserError, match="using this output folder") as busy:
            with folder_lock(out, Shard(0, 2)):
                pass
        assert busy.value.code == ExitCode.ABORTED
    assert not (out / "ledger.shard-0000-of-0002.jsonl").exists()
