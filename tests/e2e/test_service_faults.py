"""An unreliable service: a 429 storm is ridden out, and the API key never leaks anywhere."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import KEY, assert_all_downloaded, ledger_events, manifest_ids, run_cli, write_manifest


async def test_429_storm_completes_without_failures(tmp_path: Path, sandbox_factory) -> None:
    # Half of all keyed requests answer 429, and the server's own limit (4 submits per scaled
    # minute = 1.2 s) is below the worker's --rpm, so real limit answers come too.
    sb = await sandbox_factory(latency=21.6, time_scale=0.02, faults="429=0.5", fault_seed=4, rpm=4, latency_sigma=0.2)
    n = 8
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress",
                      "--rpm", "300", "--rpm-scope", "submit", within=80)
    assert r.code == 0, (r.out, r.err)
    s = sb.stats()
    assert s["rate_limited"] > 0 and s["faults_injected"].get("429", 0) > 0
    assert s["submits_rejected"].get("429", 0) > 0
    events = ledger_events(out)
    failed = [ev for ev in events if ev["event"] == "failed"]
    assert not [ev for ev in failed if "429" in str(ev)], failed
    assert failed == []
    assert any(ev["event"] == "submit_retry" and ev.get("status") == 429 for ev in events)
    assert_all_downloaded(out, manifest_ids(n))
    assert s["duplicates"] == 0


def assert_no_key_under(folder: Path, *texts: bytes) -> None:
    needle = KEY.encode()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, f"nothing under {folder}"
    for p in files:
        assert needle not in p.read_bytes(), f"the API key is in {p}"
    for t in texts:
        assert needle not in t


async def test_api_key_never_written_or_printed(tmp_path: Path, sandbox_factory) -> None:
    faulty = await sandbox_factory(latency=0.2, faults="500=0.1,reset=0.05,429=0.1", fault_seed=9, api_key=KEY, latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 8)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", faulty.url, "--out", out, "--no-progress", "--rpm", "6000",
                      within=80)
    assert r.code in (0, 1), (r.out, r.err)
    injected = faulty.stats()["faults_injected"]
    assert injected.get("500", 0) + injected.get("reset", 0) > 0
    status = await run_cli("status", out, "--json")
    human = await run_cli("status", out)
    assert_no_key_under(out, r.raw_out, r.raw_err, status.raw_out, status.raw_err, human.raw_out, human.raw_err)

    # A service that refuses the key: the refusal is reported without echoing the key.
    strict = await sandbox_factory(latency=0.2, api_key="some-other-key", latency_sigma=0.2)
    out401 = tmp_path / "out401"
    refused = await run_cli("run", manifest, "--base-url", strict.url, "--out", out401, "--no-progress", within=30)
    assert refused.code == 3
    dry = await run_cli("run", manifest, "--base-url", strict.url, "--out", out401, "--dry-run", within=30)
    assert_no_key_under(out401, refused.raw_out, refused.raw_err, dry.raw_out, dry.raw_err)


async def test_early_429s_without_rpm_do_not_throttle_to_a_crawl(tmp_path: Path, sandbox_factory) -> None:
    # Injected 429s reset after 0.1 s; a worker that learns "a dozen per minute" from them needs minutes.
    sb = await sandbox_factory(latency=2.0, time_scale=0.1, faults="429=0.2", fault_seed=9, latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 16)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", within=10)
    assert r.code == 0, (r.out, r.err)
