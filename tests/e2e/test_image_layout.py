"""``--image-layout`` end to end: flat by default for a small manifest, buckets when asked, and a
folder that mixes both resumes without moving or paying for anything."""

from __future__ import annotations

import json
from pathlib import Path

from batchgen.store import ledger as L
from batchgen.store.shards import ImageLayout
from tests.support.cli import image_files, image_path, manifest_ids, run_cli, write_manifest


async def test_buckets_when_asked_then_a_default_rerun_keeps_them(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.05)
    manifest = write_manifest(tmp_path / "m.yaml", 4)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--image-layout", "buckets")
    assert r.code == 0, r.err
    ids = manifest_ids(4)
    want = sorted(image_path(i, layout=ImageLayout.BUCKETS) for i in ids)
    assert image_files(out) == want
    state = L.replay(out / "ledger.jsonl")
    assert sorted(state.items[i].file for i in ids) == want

    # Two more items, default layout: the new ones are flat, the earlier ones stay in their buckets.
    bigger = write_manifest(tmp_path / "m.yaml", 6)
    before = sb.stats()["submit_requests"]
    again = await run_cli("run", bigger, "--base-url", sb.url, "--out", out, "--no-progress")
    assert again.code == 0, again.err
    assert sb.stats()["submit_requests"] == before + 2
    assert image_files(out) == sorted([*want, image_path("img-004"), image_path("img-005")])
    st = await run_cli("status", out, "--json")
    s = json.loads(st.out)
    assert s["states"]["downloaded"] == 6 and s["missing_files"] == []


async def test_an_unknown_layout_is_one_usage_line(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", 1)
    r = await run_cli("run", manifest, "--sandbox", "--out", tmp_path / "out", "--image-layout", "deep")
    assert r.code == 2
    assert "--image-layout" in r.err and "Traceback" not in r.err
