"""What a resume does with what it finds in the folder, through the command line (issue 10, points
2-4): damaged or missing files come back from their recorded URLs for free; a ledger ``file``
outside the folder is never read, exported or embedded; an edited prompt is generated again with the
earlier image kept aside; ``--retry-failed`` tries items that failed for good."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from batchgen.core.fastjson import params_sha
from batchgen.sandbox.images import render_png
from batchgen.store import ledger as L
from tests.support.cli import (
    assert_all_downloaded,
    image_path,
    ledger_events,
    manifest_ids,
    run_cli,
    write_manifest,
)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def plan_of(*args: Any) -> Any:
    """``batchgen plan`` without a key: with one it would ask the real service for the balance."""
    return await run_cli("plan", *args, key=None)


def plan_line(text: str) -> str:
    (line,) = [x for x in text.splitlines() if "to submit" in x]
    return line


async def first_run(tmp_path: Path, sb: Any, n: int) -> tuple[Path, Path, tuple[Any, ...]]:
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    got = await run_cli(*args)
    assert got.code == 0, (got.out, got.err)
    return manifest, out, args


async def test_missing_truncated_and_rewritten_files_are_fetched_again_without_paying(
    tmp_path: Path, sandbox_factory
) -> None:
    sb = await sandbox_factory()
    manifest, out, args = await first_run(tmp_path, sb, 4)
    state = L.replay(out / "ledger.jsonl")
    recorded = {i: state.items[i].sha256 for i in manifest_ids(4)}
    (out / image_path("img-000")).unlink()
    data = (out / image_path("img-001")).read_bytes()
    (out / image_path("img-001")).write_bytes(data[: len(data) // 2])
    rewritten = bytearray((out / image_path("img-002")).read_bytes())
    rewritten[100] ^= 0xFF
    (out / image_path("img-002")).write_bytes(bytes(rewritten))
    later = (out / "ledger.jsonl").stat().st_mtime + 10  # rewritten after its line, as any edit would be
    os.utime(out / image_path("img-002"), (later, later))
    before = sb.stats()

    plan = await plan_of(manifest, "--out", out)
    assert plan.code == 0, plan.err
    assert "done 1, to submit 0" in plan_line(plan.out) and "to download 3" in plan_line(plan.out)
    status = json.loads((await run_cli("status", out, "--json")).out)
    assert sorted(status["missing_files"]) == ["img-000", "img-001", "img-002"]

    resumed = await run_cli(*args)
    assert resumed.code == 0, (resumed.out, resumed.err)
    after = sb.stats()
    assert after["submits_accepted"] == before["submits_accepted"] == 4
    assert after["charged_usd"] == before["charged_usd"]
    assert after["downloads"] - before["downloads"] == 3
    assert_all_downloaded(out, manifest_ids(4))
    assert {i: sha(out / image_path(i)) for i in manifest_ids(4)} == recorded


async def test_a_ledger_file_outside_the_folder_is_never_read_exported_or_embedded(
    tmp_path: Path, sandbox_factory
) -> None:
    sb = await sandbox_factory()
    manifest, out, args = await first_run(tmp_path, sb, 3)
    secret = tmp_path / "secret.png"
    secret.write_bytes(render_png("private picture", 7, 64, 64))
    (tmp_path / "linked.png").write_bytes(secret.read_bytes())
    (out / image_path("img-002")).unlink()
    (out / image_path("img-002")).symlink_to(tmp_path / "linked.png")
    planted = {"event": "downloaded", "file": None, "sha256": sha(secret), "bytes": secret.stat().st_size,
               "ts": "2026-01-01T00:00:00.000Z"}
    lines = [json.dumps({**planted, "item": item, "file": file}) + "\n" for item, file in (
        ("img-000", "../secret.png"), ("img-001", str(secret)), ("img-002", image_path("img-002")))]
    ledger = out / "ledger.jsonl"
    ledger.write_text(ledger.read_text() + "".join(lines))

    dest = tmp_path / "export"
    exported = await run_cli("export", out, "--format", "imagefolder", "--to", dest)
    assert exported.code == 0, exported.err
    assert "exported 0 images" in exported.out
    assert not any(p.read_bytes() == secret.read_bytes() for p in dest.rglob("*.png"))
    page = tmp_path / "report.html"
    assert (await run_cli("report", out, "--to", page)).code == 0
    html = page.read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:100] not in html and "data:image/" not in html

    plan = await plan_of(manifest, "--out", out)
    assert "done 0" in plan_line(plan.out) and "to download 3" in plan_line(plan.out)
    resumed = await run_cli(*args)
    assert resumed.code == 0, (resumed.out, resumed.err)
    assert sb.stats()["submits_accepted"] == 3  # fetched again from the recorded URLs, not paid again
    assert_all_downloaded(out, manifest_ids(3))
    assert not (out / image_path("img-002")).is_symlink()
    assert (tmp_path / "linked.png").read_bytes() == secret.read_bytes()  # the link's target untouched
    exported = await run_cli("export", out, "--format", "imagefolder", "--to", dest, "--overwrite")
    assert "exported 3 images" in exported.out


async def test_an_edited_prompt_is_generated_again_and_the_earlier_image_kept(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory()
    manifest, out, args = await first_run(tmp_path, sb, 3)
    state = L.replay(out / "ledger.jsonl")
    old = state.items["img-001"]
    old_bytes = (out / image_path("img-001")).read_bytes()
    text = manifest.read_text()
    assert "Test picture number 1 of img" in text
    manifest.write_text(text.replace("Test picture number 1 of img", "An edited picture, number 1"))

    plan = await plan_of(manifest, "--out", out)
    assert "done 2, to submit 1 (new 0, changed 1," in plan_line(plan.out), plan.out
    assert "estimated cost $0.10 for 1 images" in plan.out

    resumed = await run_cli(*args)
    assert resumed.code == 0, (resumed.out, resumed.err)
    assert sb.stats()["submits_accepted"] == 4
    kept = (out / image_path("img-001")).with_name(f"img-001~superseded-{str(old.params_sha)[:8]}.png")
    assert kept.read_bytes() == old_bytes and sha(kept) == old.sha256
    new = out / image_path("img-001")
    assert new.read_bytes() != old_bytes
    (moved,) = [ev for ev in ledger_events(out) if ev["event"] == "superseded"]
    assert (moved["item"], moved["file"], moved["was"]) == (
        "img-001", kept.relative_to(out).as_posix(), image_path("img-001"))

    again = await plan_of(manifest, "--out", out)
    assert "done 3, to submit 0 (new 0, changed 0," in plan_line(again.out)

    dest = tmp_path / "export"
    assert (await run_cli("export", out, "--format", "imagefolder", "--to", dest)).code == 0
    rows = {r["id"]: r for r in map(json.loads, (dest / "train" / "metadata.jsonl").read_text().splitlines())}
    assert sorted(rows) == manifest_ids(3)
    assert rows["img-001"]["prompt"] == "An edited picture, number 1"
    assert (dest / "train" / rows["img-001"]["file_name"]).read_bytes() == new.read_bytes()
    assert rows["img-001"]["sha256"] == sha(new)
    assert sorted(p.name for p in (dest / "train").iterdir()) == sorted([*(f"{i}.png" for i in manifest_ids(3)),
                                                                         "metadata.jsonl"])
    page = tmp_path / "report.html"
    assert (await run_cli("report", out, "--to", page)).code == 0
    html = page.read_text()
    assert "An edited picture, number 1" in html and "Test picture number 1 of img" not in html
    assert html.count("data:image/") == 3


async def test_unchanged_items_are_not_changed(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory()
    manifest, out, args = await first_run(tmp_path, sb, 3)
    plan = await plan_of(manifest, "--out", out)
    assert "done 3, to submit 0 (new 0, changed 0, retry 0, uncertain 0)" in plan_line(plan.out)
    again = await run_cli(*args)
    assert again.code == 0 and sb.stats()["submits_accepted"] == 3
    assert not [ev for ev in ledger_events(out) if ev["event"] == "superseded"]
    state = L.replay(out / "ledger.jsonl")
    items = {i: state.items[i] for i in manifest_ids(3)}
    assert all(st.params_sha == st.file_params_sha for st in items.values())
    assert params_sha({"resolution": "x"}) != items["img-000"].params_sha  # the hash is of real parameters


async def test_retry_failed_tries_items_that_failed_for_good_again(tmp_path: Path, sandbox_factory) -> None:
    failing = await sandbox_factory(faults={"failed": 1.0})
    manifest = write_manifest(tmp_path / "m.yaml", 3)
    out = tmp_path / "out"
    first = await run_cli("run", manifest, "--base-url", failing.url, "--out", out, "--no-progress")
    assert first.code == 1, (first.out, first.err)
    assert failing.stats()["charged_usd"] == 0  # a FAILED generation is not billed

    healthy = await sandbox_factory()
    args = ("run", manifest, "--base-url", healthy.url, "--out", out, "--no-progress")
    plain = await run_cli(*args)
    assert plain.code == 1 and healthy.stats()["submit_requests"] == 0  # without the option: left alone
    plan = await plan_of(manifest, "--out", out)
    assert "failed for good 3 (--retry-failed submits them again)" in plan_line(plan.out)
    assert "estimated cost $0.00 for 0 images" in plan.out
    plan = await plan_of(manifest, "--out", out, "--retry-failed")
    assert "to submit 3 (new 0, changed 0, retry 0, retry-failed 3, uncertain 0)" in plan_line(plan.out)
    assert "failed for good 0" in plan_line(plan.out) and "estimated cost $0.30 for 3 images" in plan.out

    retried = await run_cli(*args, "--retry-failed")
    assert retried.code == 0, (retried.out, retried.err)
    assert healthy.stats()["submits_accepted"] == 3
    assert_all_downloaded(out, manifest_ids(3))
