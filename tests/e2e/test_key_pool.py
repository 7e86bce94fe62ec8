"""A pool of API keys against the sandbox, whose rate limit and answers are per key.

Two keys, each held to the sandbox's per-key limit, finish a batch in about half the rate-limit
windows one key needs (counted by the sandbox, not timed); every poll and result fetch goes with
the key that submitted the request (the sandbox answers another key's request 404, and counts it);
a key revoked mid-run is retired while the other finishes, and its requests wait in the ledger for
a run in which it is accepted again.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api.outcomes import Secret
from batchgen.app.runner import RunOptions, dry_run, execute
from batchgen.engine.context import RunOutcome
from batchgen.sandbox import Sandbox
from batchgen.store import ledger as L
from tests.support.cli import assert_all_downloaded, ledger_events, manifest_ids, write_manifest

KEY_A, KEY_B, KEY_C = "SG_pool_key_a_0123456789", "SG_pool_key_b_abcdefghij", "SG_single_key_c_ABCDEFGH"
RPM = 5  # per key, per (scaled) minute


async def run_with(keys: list[str], sb: Sandbox, manifest: Path, out: Path, monkeypatch: pytest.MonkeyPatch,
                   **opts: Any) -> tuple[RunOutcome, list[str]]:
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    monkeypatch.delenv("SEGMIND_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("SEGMIND_API_KEYS", ",".join(keys))
    said: list[str] = []
    with anyio.fail_after(90):
        outcome = await execute(RunOptions(manifest=manifest, out=out, base_url=sb.url, **opts), said.append)
    return outcome, said


def submitted_by_key(out: Path) -> Counter[str]:
    return Counter(ev["key_fp"] for ev in ledger_events(out) if ev["event"] == "submitted")


async def test_two_keys_take_half_the_rate_windows_and_poll_with_their_own_key(
    tmp_path: Path, sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20
    # A scaled minute of 0.6 s; the worker is not told the limit: it meets each key's 429s.
    sb = await sandbox_factory(rpm=RPM, time_scale=0.01, latency=5.0, latency_sigma=0.0)

    single, _ = await run_with([KEY_C], sb, write_manifest(tmp_path / "one.yaml", n, prefix="one"),
                               tmp_path / "one", monkeypatch)
    pool, said = await run_with([KEY_A, KEY_B], sb, write_manifest(tmp_path / "two.yaml", n, prefix="two"),
                                tmp_path / "two", monkeypatch)
    assert single.exit_code == 0 and pool.exit_code == 0, said
    assert_all_downloaded(tmp_path / "two", manifest_ids(n, "two"))

    one, a, b = (sb.state.keys.stats(k) for k in (KEY_C, KEY_A, KEY_B))
    windows = sb.state.limiter.windows
    assert one["submits_accepted"] == n and windows[KEY_C] >= math.ceil(n / RPM)
    # Both keys carried the batch, each within its own limit: half the windows, so about twice as fast.
    assert a["submits_accepted"] + b["submits_accepted"] == n
    assert min(a["submits_accepted"], b["submits_accepted"]) >= RPM
    assert max(windows[KEY_A], windows[KEY_B]) <= math.ceil(n / (2 * RPM)) + 1 < windows[KEY_C]
    assert a["rate_limited"] >= 1 and b["rate_limited"] >= 1  # each key met its own limit
    # Every status poll and result fetch went with the key that made the request.
    for stats in (a, b):
        assert stats.get("foreign", 0) == 0 and stats["status"] >= 1 and stats["result"] >= 1
    assert sb.stats()["not_found"] == 0 and sb.stats()["duplicates"] == 0
    by_key = submitted_by_key(tmp_path / "two")
    assert by_key == {Secret(KEY_A).fingerprint: a["submits_accepted"], Secret(KEY_B).fingerprint: b["submits_accepted"]}
    assert any("2 keys, each" in line for line in said)


async def test_a_key_revoked_mid_run_is_retired_and_its_requests_wait_for_it(
    tmp_path: Path, sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 8
    sb = await sandbox_factory(latency=0.4, latency_sigma=0.0)
    create_job = sb.state.create_job

    def revoke_b_after_its_second(slug: str, key: str, *args: Any) -> Any:
        job = create_job(slug, key, *args)
        if key == KEY_B and sb.state.keys.counters(KEY_B)["submits_accepted"] == 2:
            sb.state.keys.revoke(KEY_B)  # this submit is still answered 200; every later request 401
        return job

    monkeypatch.setattr(sb.state, "create_job", revoke_b_after_its_second)
    manifest, out = write_manifest(tmp_path / "m.yaml", n), tmp_path / "out"
    fp_b = Secret(KEY_B).fingerprint

    first, said = await run_with([KEY_A, KEY_B], sb, manifest, out, monkeypatch)
    assert first.exit_code == 1 and first.counts["downloaded"] == n - 2 and first.counts["in_flight"] == 2, said
    retired = [line for line in said if "retired for this run" in line]
    assert len(retired) == 1 and f"key 2 of 2 ({fp_b})" in retired[0] and "401" in retired[0]
    state = L.replay(out / "ledger.jsonl")
    waiting = sorted(st.item for st in state.items.values() if st.state == L.SUBMITTED)
    assert len(waiting) == 2 and all(state.items[i].key_fp == fp_b for i in waiting)
    b_status = sb.state.keys.stats(KEY_B).get("status", 0)

    # Without b, its requests are left alone: no other key may read them, and nothing is paid again.
    alone, said = await run_with([KEY_A], sb, manifest, out, monkeypatch)
    assert alone.exit_code == 1 and alone.counts["in_flight"] == 2
    assert any(f"2 by key {fp_b}" in line for line in said), said
    assert sb.state.keys.stats(KEY_B).get("status", 0) == b_status and sb.stats()["submits_accepted"] == n

    # b accepted again: it reads its own two requests; nothing was paid twice.
    sb.state.keys.revoked.discard(KEY_B)
    again, said = await run_with([KEY_A, KEY_B], sb, manifest, out, monkeypatch)
    assert again.exit_code == 0, said
    assert_all_downloaded(out, manifest_ids(n))
    assert sb.stats()["submits_accepted"] == n and sb.stats()["duplicates"] == 0
    for key in (KEY_A, KEY_B):
        assert sb.state.keys.stats(key).get("foreign", 0) == 0


async def test_a_key_refused_at_the_balance_check_is_retired_before_the_run(
    tmp_path: Path, sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = await sandbox_factory()
    sb.state.keys.revoke(KEY_A)
    outcome, said = await run_with([KEY_A, KEY_B], sb, write_manifest(tmp_path / "m.yaml", 4), tmp_path / "out",
                                   monkeypatch)
    assert outcome.exit_code == 0
    assert [line for line in said if "retired" in line] == [
        line for line in said if f"key 1 of 2 ({Secret(KEY_A).fingerprint}) retired for this run" in line]
    assert sb.state.keys.stats(KEY_B)["submits_accepted"] == 4
    assert sb.state.keys.stats(KEY_A).get("submit", 0) == 0
    # Every key refused: nothing is sent, exit 3.
    sb.state.keys.revoke(KEY_B)
    with pytest.raises(Exception) as e:
        await run_with([KEY_A, KEY_B], sb, write_manifest(tmp_path / "m2.yaml", 4, prefix="x"), tmp_path / "out2",
                       monkeypatch)
    assert getattr(e.value, "code", None) == 3 and "no API key left" in str(e.value)


async def test_a_dry_run_shows_each_keys_balance_and_the_sum(
    tmp_path: Path, sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = await sandbox_factory(credits=3.0)
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    monkeypatch.setenv("SEGMIND_API_KEYS", f"{KEY_A},{KEY_B}")
    said: list[str] = []
    opts = RunOptions(manifest=write_manifest(tmp_path / "m.yaml", 80), out=tmp_path / "out", base_url=sb.url,
                      dry_run=True)
    assert await dry_run(opts, said.append) == 0
    fp_a, fp_b = Secret(KEY_A).fingerprint, Secret(KEY_B).fingerprint
    assert f"  balance of key 1 of 2 ({fp_a}) $3.00" in said and f"  balance of key 2 of 2 ({fp_b}) $3.00" in said
    assert "  balance $6.00 over 2 keys — short of the $8.00 needed" in said, said
    assert sb.stats()["submit_requests"] == 0
