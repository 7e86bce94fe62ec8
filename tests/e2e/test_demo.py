"""The demo manifest end to end: images, ledger, status, rerun and dry run agree."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from batchgen.store import ledger as L
from tests.support.cli import DEMO, assert_all_downloaded, count_events, resolution_size, run_cli


def demo_sizes() -> dict[str, tuple[int, int]]:
    doc = yaml.safe_load(DEMO.read_text())
    default = doc["defaults"]["resolution"]
    return {it["id"]: resolution_size(it.get("resolution", default)) for it in doc["items"]}


async def check_status(out: Path, n: int) -> None:
    st = await run_cli("status", out, "--json")
    assert st.code == 0, st.err
    s = json.loads(st.out)
    assert s["items"] == n
    assert s["states"]["downloaded"] == n
    assert sum(s["states"].values()) == n
    assert s["failures"] == [] and s["missing_files"] == []
    assert s["last_exit_code"] == 0
    replayed = L.replay(out / "ledger.jsonl")
    assert s["paid_submits"] == sum(x.submits for x in replayed.items.values())


async def test_demo_with_builtin_sandbox(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sizes = demo_sizes()
    r = await run_cli("run", DEMO, "--sandbox", "--out", out, "--no-progress")
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert_all_downloaded(out, list(sizes), sizes)
    await check_status(out, len(sizes))


async def test_demo_against_sandbox_then_rerun_submits_nothing(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.3, latency_sigma=0.2)
    out = tmp_path / "out"
    sizes = demo_sizes()
    r = await run_cli("run", DEMO, "--base-url", sb.url, "--out", out, "--no-progress")
    assert r.code == 0, r.err
    assert_all_downloaded(out, list(sizes), sizes)
    await check_status(out, len(sizes))
    stats = sb.stats()
    assert stats["submits_accepted"] == len(sizes)
    assert stats["duplicates"] == 0

    lines_before = count_events(out, "submitted")
    again = await run_cli("run", DEMO, "--base-url", sb.url, "--out", out, "--no-progress")
    assert again.code == 0, again.err
    after = sb.stats()
    assert after["submits_accepted"] == stats["submits_accepted"]
    assert after["submit_requests"] == stats["submit_requests"]
    assert count_events(out, "submitted") == lines_before
    assert_all_downloaded(out, list(sizes), sizes)
    await check_status(out, len(sizes))


async def test_dry_run_prints_plan_and_sends_nothing(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.3, latency_sigma=0.2)
    out = tmp_path / "out"
    r = await run_cli("run", DEMO, "--base-url", sb.url, "--out", out, "--dry-run", key=None)
    assert r.code == 0, r.err
    assert "estimated cost $1.20" in r.out
    assert "12 items" in r.out
    assert sb.stats()["requests_total"] == 0
    assert not (out / "ledger.jsonl").exists()

    # With a key the plan may read the (free) balance, but still submits nothing.
    r = await run_cli("run", DEMO, "--base-url", sb.url, "--out", out, "--dry-run", "--max-images", "5")
    assert r.code == 0, r.err
    assert "estimated cost $0.50" in r.out
    s = sb.stats()
    assert s["submit_requests"] == 0 and s["submits_accepted"] == 0
    assert not (out / "ledger.jsonl").exists()

    # After a partial run, the plan counts what is done and prices only the rest.
    part = await run_cli("run", DEMO, "--base-url", sb.url, "--out", out, "--max-images", "4", "--no-progress")
    assert part.code == 3, part.err
    accepted = sb.stats()["submits_accepted"]
    assert accepted == 4
    r = await run_cli("run", DEMO, "--base-url", sb.url, "--out", out, "--dry-run")
    assert r.code == 0, r.err
    assert "done 4" in r.out and "estimated cost $0.80" in r.out
    assert sb.stats()["submits_accepted"] == accepted
