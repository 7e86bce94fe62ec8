"""Shards as schedulers run them: N processes, one output folder, one service, no coordination.

Three workers are started the way a Kubernetes Indexed Job starts its pods (``JOB_COMPLETION_INDEX``
in the environment, the same command line for all); together they must submit every item exactly
once, download every image, and leave a folder that status, export and reconcile read as one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.store import ledger as L
from batchgen.store.shards import shard_of
from tests.support.cli import image_files, image_path, manifest_ids, run_cli, write_manifest

COUNT = 3
SHARD_LEDGERS = [f"ledger.shard-{i:04d}-of-{COUNT:04d}.jsonl" for i in range(COUNT)]


async def status_json(out: Path) -> dict[str, Any]:
    got = await run_cli("status", out, "--json")
    assert got.code == 0, got.err
    return json.loads(got.out)


async def test_three_indexed_shards_submit_every_item_once_and_status_aggregates_them(
    tmp_path: Path, sandbox_factory, start_cli
) -> None:
    n = 36
    sb = await sandbox_factory(latency=0.2, latency_sigma=0.3)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--shard-count", COUNT)
    mine = sum(1 for i in manifest_ids(n) if shard_of(i, COUNT) == 2)
    planned = await run_cli("plan", manifest, "--out", out, "--shard-count", COUNT, env={"JOB_COMPLETION_INDEX": "2"},
                            key=None)
    assert planned.code == 0 and f"(shard 2 of 3: {mine} of {n} items, ledger {SHARD_LEDGERS[2]})" in planned.out
    assert f"to submit {mine} (new {mine}," in planned.out, planned.out
    workers = [await start_cli(*args, env={"JOB_COMPLETION_INDEX": str(i)}) for i in range(COUNT)]
    for w in workers:
        done = await w.wait(within=90)
        assert done.code == 0, (done.out, done.err)

    s = sb.stats()
    assert s["submits_accepted"] == n and s["duplicates"] == 0, s
    assert s["downloads"] == n and s["charged_usd"] == pytest.approx(n * 0.10), s
    ids = manifest_ids(n)
    assert image_files(out) == sorted(image_path(i) for i in ids)
    assert not (out / "ledger.jsonl").exists()
    for index, name in enumerate(SHARD_LEDGERS):  # each ledger holds exactly the items its index owns
        state = L.replay(out / name)
        assert sorted(state.items) == [i for i in ids if shard_of(i, COUNT) == index], name
        assert all(st.state == L.DOWNLOADED and st.file == image_path(i) for i, st in state.items.items())

    st = await status_json(out)
    assert st["items"] == n and st["ledger_items"] == n
    assert st["states"] == {"pending": 0, "intent": 0, "submitted": 0, "completed": 0, "downloaded": n, "failed": 0}
    assert st["paid_submits"] == n and st["spent_usd"] == pytest.approx(n * 0.10) and st["missing_files"] == []
    assert (st["runs"], st["last_exit_code"], st["last_run"]["ended"]) == (COUNT, 0, "finished")
    assert st["shards"]["count"] == COUNT and st["shards"]["found"] == [0, 1, 2] and st["shards"]["missing"] == []
    assert [p["ledger"] for p in st["shards"]["ledgers"]] == SHARD_LEDGERS

    # A finished shard started again (a pod rescheduled after success) sends nothing at all.
    before = sb.stats()
    again = await run_cli(*args, env={"JOB_COMPLETION_INDEX": "1"})
    assert again.code == 0, (again.out, again.err)
    after = sb.stats()
    assert after["requests_total"] == before["requests_total"], (before, after)

    # Export and reconcile read every shard's ledger as the folder's one history.
    dest = tmp_path / "export"
    exported = await run_cli("export", out, "--format", "imagefolder", "--to", dest)
    assert exported.code == 0 and f"exported {n} images" in exported.out, exported.out + exported.err
    rec = await run_cli("reconcile", out, "--base-url", sb.url, "--json", within=60)
    assert rec.code == 0, (rec.out, rec.err)
    report = json.loads(rec.out)
    assert report["matches"] and report["requests_billed"] == n
    assert report["billed_usd"] == pytest.approx(report["ledger_usd"]) == pytest.approx(n * 0.10)


async def test_an_unsharded_folder_is_taken_over_by_shards_without_paying_again(tmp_path: Path, sandbox_factory) -> None:
    """A nightly job that outgrew one pod: the shards read what the unsharded ledger already did."""
    n = 12
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    first = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--max-images", "5")
    assert first.code == 3, (first.out, first.err)  # the budget stopped it with 5 images
    assert sb.stats()["submits_accepted"] == 5
    for index in range(2):
        got = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress",
                            "--shard-count", "2", "--shard-index", str(index))
        assert got.code == 0, (got.out, got.err)
    s = sb.stats()
    assert s["submits_accepted"] == n and s["duplicates"] == 0, s
    assert image_files(out) == sorted(image_path(i) for i in manifest_ids(n))
    st = await status_json(out)
    assert st["states"]["downloaded"] == n and st["items"] == n and st["paid_submits"] == n
    assert st["shards"]["unsharded_ledger"] is True and st["last_exit_code"] == 0

    # From now on the folder is split two ways: no unsharded run, no other count.
    for extra in ((), ("--shard-count", "3", "--shard-index", "0")):
        refused = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", *extra)
        assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
        assert "2 shards" in refused.err and "--shard-count 2" in refused.err
    assert sb.stats()["requests_total"] == s["requests_total"]


@pytest.mark.parametrize(
    ("flags", "env", "said"),
    [
        (("--shard-count", "3", "--shard-index", "3"), {}, "--shard-index 3 is out of range for --shard-count 3"),
        (("--shard-count", "3", "--shard-index", "-1"), {}, "out of range"),
        (("--shard-count", "0", "--shard-index", "0"), {}, "--shard-count must be 1 or more"),
        (("--shard-count", "3"), {"JOB_COMPLETION_INDEX": "two"}, "JOB_COMPLETION_INDEX='two' is not a shard index"),
        (("--shard-count", "3"), {"AWS_BATCH_JOB_ARRAY_INDEX": "1.5"}, "AWS_BATCH_JOB_ARRAY_INDEX='1.5'"),
        (("--shard-count", "3"), {"JOB_COMPLETION_INDEX": "7"}, "JOB_COMPLETION_INDEX 7 is out of range"),
        (("--shard-count", "3"), {}, "needs --shard-index, or JOB_COMPLETION_INDEX"),
        (("--shard-index", "1"), {}, "--shard-index needs --shard-count"),
        (("--shard-count", "3", "--shard-index", "x"), {}, "invalid int value"),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan"])
async def test_bad_shard_values_exit_2_with_one_line_and_send_nothing(
    tmp_path: Path, sandbox_factory, command: str, flags: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 3)
    out = tmp_path / "out"
    got = await run_cli(command, manifest, "--base-url", sb.url, "--out", out, *flags, env=env)
    assert got.code == 2 and said in got.err and len(got.err.strip().splitlines()) == 1, got.err
    assert sb.stats()["requests_total"] == 0
    assert not out.exists() or not list(out.glob("ledger*"))
