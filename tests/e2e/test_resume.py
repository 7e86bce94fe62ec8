"""Kill, interrupt and expiry: a resumed run finishes the batch without paying twice (beyond the bound)."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import anyio
import pytest

from batchgen.store import ledger as L
from tests.support.cli import (
    assert_all_downloaded,
    count_events,
    ledger_events,
    ledger_lines,
    manifest_ids,
    run_cli,
    wait_for,
    write_manifest,
)


async def test_sigkill_three_times_then_resume(tmp_path: Path, sandbox_factory, start_cli) -> None:
    n, kills = 200, 3
    sb = await sandbox_factory(latency=0.4, latency_sigma=0.3)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--concurrency", "32")
    rng = random.Random(2026)
    for _ in range(kills):
        start = ledger_lines(out)
        target = start + rng.randint(40, 160)
        worker = await start_cli(*args)
        await wait_for(lambda t=target, w=worker: ledger_lines(out) >= t or w.returncode is not None, within=60)
        assert worker.returncode is None, "the worker ended before it could be killed"
        await anyio.sleep(rng.uniform(0.0, 0.2))
        worker.signal(signal.SIGKILL)
        killed = await worker.wait(within=20)
        assert killed.code == -signal.SIGKILL
        L.replay(out / "ledger.jsonl")  # a torn tail is tolerated, nothing else

    final = await run_cli(*args, within=90)
    assert final.code == 0, (final.out, final.err)
    assert_all_downloaded(out, manifest_ids(n))
    s = sb.stats()
    assert s["duplicates"] <= kills + s["lost_submit_answers"], s
    state = L.replay(out / "ledger.jsonl")
    assert sum(st.submits for st in state.items.values()) == s["submits_accepted"]


async def test_sigint_exits_130_and_resume_finishes(tmp_path: Path, sandbox_factory, start_cli) -> None:
    n = 30
    sb = await sandbox_factory(latency=1.0, latency_sigma=0.3)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--concurrency", "8")
    worker = await start_cli(*args)
    await wait_for(lambda: count_events(out, "submitted") >= 10 or worker.returncode is not None, within=30)
    assert worker.returncode is None
    worker.signal(signal.SIGINT)
    r = await worker.wait(within=20)
    assert r.code == 130, (r.out, r.err)
    assert "Traceback" not in r.err
    state = L.replay(out / "ledger.jsonl")
    assert not state.torn_tail
    ends = [ev for ev in ledger_events(out) if ev["event"] == "run_end"]
    assert ends and ends[-1]["exit_code"] == 130

    resumed = await run_cli(*args, within=60)
    assert resumed.code == 0, (resumed.out, resumed.err)
    assert_all_downloaded(out, manifest_ids(n))
    s = sb.stats()
    assert s["duplicates"] <= s["lost_submit_answers"] + 1, s


@pytest.mark.parametrize("worker_knows", [False, True], ids=["found-by-404", "known-retention"])
async def test_expired_results_are_resubmitted(tmp_path: Path, sandbox_factory, start_cli, worker_knows: bool) -> None:
    n, retention = 8, 3.0  # longer than the first poll (2 s) of a worker that does not know it
    # Without a request history (with one, nothing is paid again: tests/e2e/test_recovery.py).
    sb = await sandbox_factory(latency=0.5, latency_sigma=0.0, retention=retention, history=False)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ["run", manifest, "--base-url", sb.url, "--out", out, "--no-progress"]
    if worker_knows:
        args += ["--retention", str(retention)]
    worker = await start_cli(*args)
    await wait_for(lambda: count_events(out, "submitted") >= n or worker.returncode is not None, within=30)
    worker.signal(signal.SIGKILL)
    await worker.wait(within=20)
    # Every job finished unread; let its record pass its retention before the resume.
    await wait_for(lambda: sb.stats()["completed"] == n, within=30)
    await anyio.sleep(retention + 0.5)
    polls_before = sb.stats()["status_polls"]

    r = await run_cli(*args, within=60)
    assert r.code == 0, (r.out, r.err)
    expired = [ev for ev in ledger_events(out) if ev["event"] == "expired"]
    assert {ev["item"] for ev in expired} == set(manifest_ids(n))
    assert_all_downloaded(out, manifest_ids(n))
    s = sb.stats()
    assert s["submits_accepted"] == 2 * n
    if worker_knows:
        # Told the retention, the worker asks about each id it believes gone exactly once (its own
        # clock may have leapt) and then submits again, without polling dead ids over and over.
        assert s["not_found"] == n
    else:
        assert s["not_found"] >= n
    assert s["status_polls"] > polls_before


@pytest.mark.parametrize("worker_knows", [False, True], ids=["found-by-404", "known-retention"])
async def test_an_item_that_always_outlives_its_retention_is_resubmitted_a_bounded_number_of_times(
    tmp_path: Path, sandbox_factory, worker_knows: bool
) -> None:
    # Every generation takes longer than the record lives: each submit is a paid job nobody can read
    # (without a request history to read it from; with one: tests/e2e/test_recovery.py).
    sb = await sandbox_factory(latency=1.2, latency_sigma=0.0, retention=0.6, history=False)
    n = 2
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ["run", manifest, "--base-url", sb.url, "--out", out, "--no-progress"]
    if worker_knows:
        args += ["--retention", "0.6"]

    r = await run_cli(*args, within=60)
    assert r.code == 1, (r.out, r.err)
    events = ledger_events(out)
    for item in manifest_ids(n):
        mine = [ev for ev in events if ev["item"] == item]
        assert sum(ev["event"] == "submitted" for ev in mine) == 4  # the first submit and three more
        assert mine[-1]["event"] == "failed" and "expired unread" in mine[-1]["error"]
        assert mine[-1]["retryable"] is False
    assert sb.stats()["submits_accepted"] == 4 * n

    # Failed for good: a rerun does not pay again.
    again = await run_cli(*args, within=60)
    assert again.code == 1
    assert sb.stats()["submits_accepted"] == 4 * n
    if worker_knows:
        assert sb.stats()["not_found"] == 0  # it gave up at its own deadline, never polling a dead id
