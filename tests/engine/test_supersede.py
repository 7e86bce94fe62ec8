"""An item edited since its download is generated again; its earlier image is kept under a
superseded name, recorded, and only once the new image is about to be stored."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api.outcomes import Accepted, JobResult, JobStatus
from batchgen.core.fastjson import params_sha
from batchgen.engine import supersede
from batchgen.engine.config import RunConfig
from batchgen.engine.plan import plan
from batchgen.engine.root import run_batch
from batchgen.outputs.catalog import load_catalog
from batchgen.sandbox.images import render_png
from batchgen.store.ledger import readable_events, replay
from batchgen.store.shards import image_bucket
from tests.engine.fakes import NO_WAIT, FakeClient, item, open_ledger

OLD_PNG = render_png("the old picture", 1, 64, 48)
NEW_PNG = render_png("the new picture", 2, 64, 48)


def rel(item_id: str) -> str:
    """The folder an item's images go to, relative to the output folder (``images/<bucket>``)."""
    return f"images/{image_bucket(item_id)}"


def seed_downloaded(folder: Path, items: list[Any]) -> None:
    """An earlier run that downloaded every item with the parameters it had then."""
    ledger = open_ledger(folder)
    for n, it in enumerate(items):
        (folder / rel(it.id)).mkdir(parents=True, exist_ok=True)
        (folder / rel(it.id) / f"{it.id}.png").write_bytes(OLD_PNG)
        ledger.append("intent", it.id, params_sha=params_sha(dict(it.params)), attempt=1, params=dict(it.params))
        ledger.append("submitted", it.id, request_id=f"old-{n}")
        ledger.append("completed", it.id, request_id=f"old-{n}", output_url=f"https://cdn/old-{n}.png", cost_usd=0.5)
        ledger.append("downloaded", it.id, request_id=f"old-{n}", file=f"{rel(it.id)}/{it.id}.png",
                      sha256=hashlib.sha256(OLD_PNG).hexdigest(), bytes=len(OLD_PNG))
    ledger.close()


def new_image_client(n: int = 2) -> FakeClient:
    return FakeClient(
        submit=[Accepted(f"new-{i}") for i in range(n)],
        status=[JobStatus("COMPLETED")],
        result=[JobResult("COMPLETED", "https://cdn/new.png", cost_usd=0.5, inference_time=1.0)],
        images={"https://cdn/new.png": NEW_PNG},
    )


async def run_whole(folder: Path, items: list[Any], client: FakeClient, **cfg: Any) -> Any:
    config = RunConfig(**{"slug": "test-model", "price_usd": 0.5, "expected_latency_s": 0.02, "retry": NO_WAIT, **cfg})
    ledger = open_ledger(folder)
    try:
        with anyio.fail_after(20):
            return await run_batch(config, items, folder, ledger, client, handle_signals=False)
    finally:
        ledger.close()


async def test_an_edited_item_keeps_its_earlier_image_and_gets_a_new_one(tmp_path: Path) -> None:
    before = item("a", seed=1)
    seed_downloaded(tmp_path, [before])
    after = item("a", seed=2)
    old_sha = params_sha(dict(before.params))

    outcome = await run_whole(tmp_path, [after], new_image_client())

    assert outcome.exit_code == 0 and outcome.counts["submitted"] == 1
    kept = tmp_path / rel("a") / f"a~superseded-{old_sha[:8]}.png"
    assert kept.read_bytes() == OLD_PNG
    assert (tmp_path / rel("a") / "a.png").read_bytes() == NEW_PNG
    lines = [ev for ev in readable_events(tmp_path / "ledger.jsonl") if ev.get("item") == "a"]
    kinds = [ev["event"] for ev in lines]
    assert kinds[-2:] == ["superseded", "downloaded"]
    moved = lines[-2]
    assert (moved["file"], moved["was"], moved["params_sha"]) == (f"{rel('a')}/{kept.name}", f"{rel('a')}/a.png", old_sha)
    assert moved["sha256"] == hashlib.sha256(OLD_PNG).hexdigest() and moved["bytes"] == len(OLD_PNG)
    cat = load_catalog(tmp_path)
    (rec,) = cat.downloaded()
    assert rec.params == dict(after.params) and cat.image(rec) == tmp_path / rel("a") / "a.png"
    assert rec.superseded == [f"{rel('a')}/{kept.name}"]


async def test_a_run_stopped_by_its_budget_leaves_the_edited_items_it_did_not_reach_in_place(tmp_path: Path) -> None:
    before = [item("a", seed=1), item("b", seed=1)]
    seed_downloaded(tmp_path, before)
    after = [item("a", seed=2), item("b", seed=2)]
    assert len(plan(after, replay(tmp_path / "ledger.jsonl"), tmp_path / "images")["changed"]) == 2

    outcome = await run_whole(tmp_path, after, new_image_client(), max_images=3)  # 2 earlier + 1 now

    assert outcome.exit_code == 3 and outcome.counts["pending"] == 1  # b is not done: its edit is not made
    names = sorted(p.name for p in (tmp_path / "images").rglob("*.png"))
    assert len(names) == 3 and "b.png" in names and "a.png" in names
    assert (tmp_path / rel("b") / "b.png").read_bytes() == OLD_PNG  # not reached: untouched
    # Exports still show b, with the parameters its image was made from: row and image agree.
    recs = {r.id: r for r in load_catalog(tmp_path).downloaded()}
    assert recs["b"].params == dict(before[1].params) and recs["a"].params == dict(after[0].params)


async def test_a_second_edit_keeps_both_earlier_images(tmp_path: Path) -> None:
    seed_downloaded(tmp_path, [item("a", seed=1)])
    await run_whole(tmp_path, [item("a", seed=2)], new_image_client())
    await run_whole(tmp_path, [item("a", seed=1)], new_image_client())  # back to the first parameters
    first_sha = params_sha(dict(item("a", seed=1).params))[:8]
    second_sha = params_sha(dict(item("a", seed=2).params))[:8]
    names = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").rglob("*.png"))
    assert names == sorted(f"{rel('a')}/{n}" for n in ["a.png", f"a~superseded-{first_sha}.png",
                                                       f"a~superseded-{second_sha}.png"])


async def test_a_same_name_already_taken_gets_a_number(tmp_path: Path) -> None:
    before = item("a", seed=1)
    seed_downloaded(tmp_path, [before])
    taken = tmp_path / rel("a") / f"a~superseded-{params_sha(dict(before.params))[:8]}.png"
    taken.write_bytes(b"an earlier keep")
    await run_whole(tmp_path, [item("a", seed=2)], new_image_client())
    assert taken.read_bytes() == b"an earlier keep"
    assert taken.with_name(taken.stem + "-2.png").read_bytes() == OLD_PNG


async def test_a_failed_rename_fails_the_item_retryably_and_stores_nothing_over_the_old_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_downloaded(tmp_path, [item("a", seed=1)])

    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(supersede.os, "rename", refuse)
    outcome = await run_whole(tmp_path, [item("a", seed=2)], new_image_client())

    assert outcome.exit_code == 1 and outcome.counts["failed_retryable"] == 1
    assert (tmp_path / rel("a") / "a.png").read_bytes() == OLD_PNG
    (failed,) = [ev for ev in readable_events(tmp_path / "ledger.jsonl") if ev["event"] == "failed"]
    assert failed["retryable"] is True and "Permission denied" in failed["error"]
    assert failed["output_url"] == "https://cdn/new.png"  # the next run fetches it for free


async def test_a_damaged_file_fetched_again_is_replaced_not_kept(tmp_path: Path) -> None:
    it = item("a", seed=1)
    seed_downloaded(tmp_path, [it])
    (tmp_path / rel("a") / "a.png").write_bytes(OLD_PNG[:-20])
    client = FakeClient(images={"https://cdn/old-0.png": OLD_PNG})
    outcome = await run_whole(tmp_path, [it], client)
    assert outcome.exit_code == 0 and client.count("submit") == 0
    assert [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").rglob("*.png")] == [f"{rel('a')}/a.png"]
    assert (tmp_path / rel("a") / "a.png").read_bytes() == OLD_PNG
