"""Money: the pre-flight balance check, running out of credits mid-run, and the two budgets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from batchgen.store import ledger as L
from tests.support.cli import (
    assert_all_downloaded,
    image_path,
    ledger_events,
    manifest_ids,
    run_cli,
    write_manifest,
)


def submitted_ids(out: Path) -> Counter[str]:
    return Counter(ev["item"] for ev in ledger_events(out) if ev["event"] == "submitted")


async def test_credits_preflight_spend_available_and_top_up(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.2, credits=0.55, price=0.10, latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 12)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")

    refused = await run_cli(*args, within=30)
    assert refused.code == 3, (refused.out, refused.err)
    assert "$0.55" in refused.err and "balance" in refused.err
    assert "Traceback" not in refused.err
    s = sb.stats()
    assert s["submits_accepted"] == 0 and s["submit_requests"] == 0

    # Two at a time, so the balance runs out while the run is going.
    partial = await run_cli(*args, "--spend-available", "--concurrency", "2", within=60)
    assert partial.code == 3, (partial.out, partial.err)
    assert "Traceback" not in partial.err
    s = sb.stats()
    assert s["submits_rejected"].get("406", 0) >= 1
    assert 1 <= s["submits_accepted"] < 12
    state = L.replay(out / "ledger.jsonl")
    # Everything that was accepted was paid for and is saved; nothing is left in flight.
    accepted = submitted_ids(out)
    assert sum(accepted.values()) == s["submits_accepted"]
    for item in accepted:
        assert state.items[item].state == L.DOWNLOADED, state.items[item]
    assert_downloaded_files(out, list(accepted))

    sb.set_credits(1000)
    resumed = await run_cli(*args, within=60)
    assert resumed.code == 0, (resumed.out, resumed.err)
    assert_all_downloaded(out, manifest_ids(12))
    s = sb.stats()
    assert s["submits_accepted"] == 12
    assert s["duplicates"] == 0
    assert all(n == 1 for n in submitted_ids(out).values())


def assert_downloaded_files(out: Path, items: list[str]) -> None:
    for item in items:
        assert (out / image_path(item)).is_file()


async def test_max_images_then_larger_budget_finishes_without_resubmitting(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.2, latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 12)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")

    first = await run_cli(*args, "--max-images", "5", within=60)
    assert first.code == 3, (first.out, first.err)
    assert "max-images" in first.err
    assert sb.stats()["submits_accepted"] == 5
    first_five = submitted_ids(out)
    assert len(first_five) == 5
    state = L.replay(out / "ledger.jsonl")
    assert all(state.items[i].state == L.DOWNLOADED for i in first_five)

    rest = await run_cli(*args, "--max-images", "20", within=60)
    assert rest.code == 0, (rest.out, rest.err)
    s = sb.stats()
    assert s["submits_accepted"] == 12 and s["duplicates"] == 0
    again = submitted_ids(out)
    assert all(again[i] == 1 for i in first_five)
    assert_all_downloaded(out, manifest_ids(12))


async def test_max_cost_caps_paid_images(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.2, price=0.10, latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 12)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress",
                      "--max-cost", "0.35", "--price", "0.10", within=60)
    assert r.code == 3, (r.out, r.err)
    assert "max-cost" in r.err
    s = sb.stats()
    assert s["submits_accepted"] == 3
    assert s["charged_usd"] <= 0.35
    state = L.replay(out / "ledger.jsonl")
    assert state.spent_usd <= 0.35
    assert sum(1 for st in state.items.values() if st.state == L.DOWNLOADED) == 3
