"""Recover, never repay: against the sandbox's request history, nothing is paid for twice.

An expired record is read from the history instead of being submitted again, a lost submit answer
is found there by its body, and a host without a history gives one warning line and the behaviour
from before there was one (tests/e2e/test_resume.py has those runs without a history).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.cli import (
    assert_all_downloaded,
    count_events,
    image_path,
    ledger_events,
    manifest_ids,
    run_cli,
    wait_for,
    write_manifest,
)


def by_event(out: Path, event: str) -> list[dict[str, Any]]:
    return [ev for ev in ledger_events(out) if ev["event"] == event]


async def reconcile_json(out: Path, url: str) -> tuple[int, dict[str, Any]]:
    r = await run_cli("reconcile", out, "--base-url", url, "--json", within=60)
    assert "Traceback" not in r.err, r.err
    return r.code, json.loads(r.out)


@pytest.mark.parametrize("worker_knows", [False, True], ids=["found-by-404", "known-retention"])
async def test_records_expired_while_the_worker_was_down_are_read_from_the_history(
    tmp_path: Path, sandbox_factory, start_cli, worker_knows: bool
) -> None:
    n, retention = 8, 3.0
    sb = await sandbox_factory(latency=0.5, latency_sigma=0.0, retention=retention, history_lag=0.3)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ["run", manifest, "--base-url", sb.url, "--out", out, "--no-progress"]
    if worker_knows:
        args += ["--retention", str(retention)]
    worker = await start_cli(*args)
    await wait_for(lambda: count_events(out, "submitted") >= n or worker.returncode is not None, within=30)
    worker.signal(signal.SIGKILL)
    await worker.wait(within=20)
    await wait_for(lambda: sb.stats()["completed"] == n, within=30)
    await anyio.sleep(retention + 0.5)  # every record is gone; the files and the history are not

    r = await run_cli(*args, within=60)
    assert r.code == 0, (r.out, r.err)
    assert_all_downloaded(out, manifest_ids(n))
    s = sb.stats()
    assert s["submits_accepted"] == n and s["duplicates"] == 0  # not one paid again
    assert by_event(out, "expired") == []
    read = by_event(out, "completed")
    assert {ev["item"] for ev in read} == set(manifest_ids(n)) and {ev["how"] for ev in read} == {"history-by-id"}
    assert all(ev["cost_usd"] == pytest.approx(0.1) for ev in read)
    assert "found in the request history instead of paid again" in r.out
    code, report = await reconcile_json(out, sb.url)
    assert code == 0 and report["billed_usd"] == pytest.approx(s["charged_usd"]) and report["not_in_ledger"] == []


async def test_a_generation_that_outlives_its_record_is_read_from_the_history(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=1.2, latency_sigma=0.0, retention=0.6)
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--retention", "0.6",
                      within=60)
    assert r.code == 0, (r.out, r.err)
    assert_all_downloaded(out, manifest_ids(2))
    assert sb.stats()["submits_accepted"] == 2 and by_event(out, "expired") == []


async def test_lost_answers_are_found_by_body_and_nothing_is_paid_twice(tmp_path: Path, sandbox_factory) -> None:
    # The history trails the service: a lost answer's request shows up only after the lag.
    sb = await sandbox_factory(faults="lost=0.3", fault_seed=11, history_lag=0.5)
    n = 12
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--history-wait", "3",
                      within=90)
    assert r.code == 0, (r.out, r.err)
    s = sb.stats()
    assert s["lost_submit_answers"] >= 2, s  # the seed must make the point
    assert s["submits_accepted"] == n and s["duplicates"] == 0, s
    recovered = by_event(out, "recovered")
    assert len(recovered) == s["lost_submit_answers"] and {ev["how"] for ev in recovered} == {"history-body-match"}
    assert_all_downloaded(out, manifest_ids(n))
    code, report = await reconcile_json(out, sb.url)
    assert code == 0, report
    assert report["billed_usd"] == pytest.approx(s["charged_usd"]) and report["not_in_ledger"] == []


async def test_a_crash_right_after_the_post_is_adopted_on_resume(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 4)
    out = tmp_path / "out"
    assert (await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")).code == 0
    # As if the process had died right after the POST: the item's lines after its intent are gone.
    lost = "img-002"
    lines = (out / "ledger.jsonl").read_text().splitlines(keepends=True)
    rid = next(json.loads(x)["request_id"] for x in lines if '"submitted"' in x and f'"{lost}"' in x)
    (out / "ledger.jsonl").write_text("".join(x for x in lines if f'"{lost}"' not in x or '"intent"' in x))
    (out / image_path(lost)).unlink()
    accepted = sb.stats()["submits_accepted"]

    again = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    assert again.code == 0, again.err
    assert sb.stats()["submits_accepted"] == accepted  # found, downloaded, not paid again
    mine = [ev for ev in ledger_events(out) if ev["item"] == lost]
    assert [ev["event"] for ev in mine][-2:] == ["recovered", "downloaded"]
    assert mine[-2]["request_id"] == rid and mine[-2]["how"] == "history-body-match"
    assert_all_downloaded(out, manifest_ids(4))


async def test_history_faults_during_recovery_change_nothing_in_the_bill(tmp_path: Path, sandbox_factory) -> None:
    """429s, 5xx answers and lag of the history itself, while lost answers and expiries need it."""
    sb = await sandbox_factory(latency=0.3, latency_sigma=0.3, faults="lost=0.2,429=0.15,500=0.1,502=0.05",
                               fault_seed=3, history_lag=0.4, time_scale=0.5)
    n = 16
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--history-wait", "3",
                      within=120)
    assert r.code == 0, (r.out, r.err)
    s = sb.stats()
    assert s["lost_submit_answers"] >= 1 and s["faults_injected"].get("429", 0) >= 1, s
    assert s["submits_accepted"] == n and s["duplicates"] == 0, s
    assert_all_downloaded(out, manifest_ids(n))


async def test_without_a_history_one_warning_line_and_the_old_behaviour(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(faults="lost=0.3", fault_seed=11, history=False)
    n = 12
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", within=90)
    assert r.code == 0, (r.out, r.err)
    assert "Traceback" not in r.err
    warned = [line for line in (r.out + r.err).splitlines() if "request history" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: no request history"), warned
    s = sb.stats()
    # As before there was a history: a lost answer is retried, and may be paid twice.
    assert s["lost_submit_answers"] >= 2 and s["submits_accepted"] == n + s["lost_submit_answers"], s
    assert by_event(out, "recovered") == []
    assert_all_downloaded(out, manifest_ids(n))
