"""Images go to ``images/<bucket>/<id>.<ext>``; flat folders of earlier versions keep their files;
the sweep of partial files covers the buckets and spares a download another shard is writing."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.outcomes import Accepted, JobResult, JobStatus
from batchgen.core.fastjson import params_sha
from batchgen.engine.config import RunConfig
from batchgen.engine.download import sweep_partials
from batchgen.engine.root import run_batch
from batchgen.sandbox.images import render_png
from batchgen.store.ledger import readable_events, replay
from batchgen.store.shards import image_bucket
from tests.engine.fakes import NO_WAIT, FakeClient, item, open_ledger

OLD = render_png("an image of an earlier version", 1, 48, 32)
NEW = render_png("an image of today", 2, 48, 32)


def client(n: int = 3) -> FakeClient:
    return FakeClient(
        submit=[Accepted(f"r-{i}") for i in range(n)],
        status=[JobStatus("COMPLETED")],
        result=[JobResult("COMPLETED", "https://cdn/new.png", cost_usd=0.5, inference_time=1.0)],
        images={"https://cdn/new.png": NEW, "https://cdn/old.png": OLD},
    )


async def run(folder: Path, items: list[Any], c: FakeClient) -> Any:
    cfg = RunConfig(slug="test-model", price_usd=0.5, expected_latency_s=0.02, retry=NO_WAIT)
    ledger = open_ledger(folder)
    try:
        with anyio.fail_after(20):
            return await run_batch(cfg, items, folder, ledger, c, handle_signals=False)
    finally:
        ledger.close()


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in (folder / "images").rglob("*") if p.is_file())


def flat_downloaded(folder: Path, it: Any) -> None:
    """What 0.1 left: ``images/<id>.png``, recorded by the ledger."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / f"{it.id}.png").write_bytes(OLD)
    ledger = open_ledger(folder)
    ledger.append("intent", it.id, params_sha=params_sha(dict(it.params)), attempt=1, params=dict(it.params))
    ledger.append("submitted", it.id, request_id="old")
    ledger.append("completed", it.id, request_id="old", output_url="https://cdn/old.png", cost_usd=0.5)
    ledger.append("downloaded", it.id, request_id="old", file=f"images/{it.id}.png",
                  sha256=hashlib.sha256(OLD).hexdigest(), bytes=len(OLD))
    ledger.close()


async def test_a_run_stores_each_image_in_the_folder_of_its_ids_hash(tmp_path: Path) -> None:
    items = [item(n) for n in range(3)]
    outcome = await run(tmp_path, items, client())
    assert outcome.exit_code == 0
    want = sorted(f"images/{image_bucket(it.id)}/{it.id}.png" for it in items)
    assert files(tmp_path) == want
    state = replay(tmp_path / "ledger.jsonl")
    assert sorted(st.file for st in state.items.values()) == want


async def test_flat_images_of_earlier_versions_stay_and_a_lost_one_comes_back_in_its_bucket(tmp_path: Path) -> None:
    kept, lost = item("kept"), item("lost")
    flat_downloaded(tmp_path, kept)
    flat_downloaded(tmp_path, lost)
    (tmp_path / "images" / "lost.png").unlink()
    c = client()
    outcome = await run(tmp_path, [kept, lost], c)
    assert outcome.exit_code == 0 and c.count("submit") == 0 and c.count("download") == 1
    assert files(tmp_path) == sorted(["images/kept.png", f"images/{image_bucket('lost')}/lost.png"])
    assert (tmp_path / "images" / "kept.png").read_bytes() == OLD  # not moved, not fetched again
    state = replay(tmp_path / "ledger.jsonl")
    assert state.items["kept"].file == "images/kept.png"
    assert state.items["lost"].file == f"images/{image_bucket('lost')}/lost.png"


async def test_an_edited_flat_image_is_kept_beside_itself_and_the_new_one_goes_to_its_bucket(tmp_path: Path) -> None:
    flat_downloaded(tmp_path, item("a", seed=1))
    outcome = await run(tmp_path, [item("a", seed=2)], client())
    assert outcome.exit_code == 0
    old_sha = params_sha(dict(item("a", seed=1).params))[:8]
    assert files(tmp_path) == sorted([f"images/a~superseded-{old_sha}.png", f"images/{image_bucket('a')}/a.png"])
    assert (tmp_path / "images" / image_bucket("a") / "a.png").read_bytes() == NEW
    moved = [ev for ev in readable_events(tmp_path / "ledger.jsonl") if ev["event"] == "superseded"]
    assert [(ev["was"], ev["file"]) for ev in moved] == [("images/a.png", f"images/a~superseded-{old_sha}.png")]


def test_the_sweep_covers_the_buckets_and_spares_a_file_another_process_writes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "ab").mkdir(parents=True)
    (images / "cd").mkdir()
    (images / ".flat.11111111.part").write_bytes(b"left by 0.1")
    (images / "ab" / ".x.22222222.part").write_bytes(b"left by a kill")
    (images / "ab" / "x.png").write_bytes(b"kept")
    live = images / "cd" / ".y.33333333.part"
    live.write_bytes(b"being written")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ".z.44444444.part").write_bytes(b"not ours")
    (images / "ef").symlink_to(outside)
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a download in progress holds it
        assert sweep_partials(images) == 2
    finally:
        os.close(fd)
    assert files(tmp_path) == ["images/ab/x.png", "images/cd/.y.33333333.part"]
    assert (outside / ".z.44444444.part").exists()  # a linked bucket is never entered
    assert sweep_partials(images) == 1  # its writer is gone: swept the next time
    assert not live.exists()


async def test_a_bucket_folder_planted_as_a_link_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / image_bucket("item-000")).symlink_to(victim)
    outcome = await run(tmp_path / "out", [item(0)], client(1))
    assert outcome.exit_code == 1 and list(victim.iterdir()) == []
    st = replay(tmp_path / "out" / "ledger.jsonl").items["item-000"]
    assert st.retryable and "symbolic link" in (st.error or "") and st.output_url == "https://cdn/new.png"
