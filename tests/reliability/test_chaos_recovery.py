"""Chaos with the account's request history: every fault at once, SIGKILLs, records that expire while
no worker runs, a history that trails the service, and not one item paid for twice.

The same chaos as test_chaos.py (whose service has no history, so it checks the bounds without
one), with the promise a history makes possible: the sandbox's ``duplicates`` stays 0, its
accepted submits equal the items, every accepted request is in the ledger, and every request that
COMPLETED was delivered. Records expire for real here (a short retention and a downtime longer
than it), so the history's timestamps and the worker's clock agree, as they do in production.

Replay a failure with the seed it printed: ``BATCHGEN_CHAOS_SEED=<seed> pytest tests/reliability -k chaos``.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path

import anyio
import pytest

from batchgen.store import ledger as L
from tests.reliability.test_chaos import FAULTS, LONG_429, SHORT_429, TIME_SCALE, chaos_manifest, seed_for
from tests.support.cli import image_files, image_path, ledger_events, ledger_lines, run_cli, wait_for
from tests.support.images import png_size

RETENTION = 60.0  # service seconds: 12 s real at the time scale, so a downtime can outlast it
HISTORY_LAG = 2.0  # service seconds (0.4 s real) between a request and its history record
HISTORY_WAIT = 3.0  # real seconds the worker gives a record to land before paying again


async def chaos_with_history(tmp_path: Path, sandbox_factory, start_cli, *, seed: int, n: int, kills: int,
                             downtimes: set[int], rate_limited: float) -> None:
    print(f"chaos-with-history seed {seed}: {n} items, {kills} kills, records expire during the downtime after "
          f"kills {sorted(downtimes)} (replay: BATCHGEN_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    sb = await sandbox_factory(latency=1.5, latency_sigma=0.5, time_scale=TIME_SCALE, slow_seconds=5.0,
                               faults=f"429={rate_limited},{FAULTS}", fault_seed=seed, retention=RETENTION,
                               history_lag=HISTORY_LAG)
    sizes = chaos_manifest(tmp_path / "chaos.yaml", n, rng)
    out = tmp_path / "out"
    args = ("run", tmp_path / "chaos.yaml", "--base-url", sb.url, "--out", out, "--no-progress",
            "--concurrency", "32", "--rpm", "60000", "--history-wait", str(HISTORY_WAIT))

    killed = 0
    for k in range(kills):
        target = ledger_lines(out) + rng.randint(n // 4, n)
        pause = rng.uniform(0.0, 0.3)
        worker = await start_cli(*args)
        await wait_for(lambda t=target, w=worker: ledger_lines(out) >= t or w.returncode is not None, within=120)
        if worker.returncode is not None:
            break
        await anyio.sleep(pause)
        worker.signal(signal.SIGKILL)
        r = await worker.wait(within=20)
        assert r.code == -signal.SIGKILL, (r.code, r.err[-2000:])
        killed += 1
        L.replay(out / "ledger.jsonl")
        if k in downtimes:
            await anyio.sleep(RETENTION * TIME_SCALE + 1.0)  # every record submitted so far is gone
    assert killed >= 1, "the worker finished before the first kill: the schedule interrupted nothing"

    final = await run_cli(*args, within=240)
    print(final.out[-2000:], final.err[-2000:])
    assert final.code in (0, 1), (final.code, final.err[-2000:])
    assert "Traceback" not in final.err

    # 1. every item downloaded or failed with a reason; complete files only
    state = L.replay(out / "ledger.jsonl")
    assert not state.torn_tail
    events = ledger_events(out)
    for item in sizes:
        st = state.items.get(item)
        assert st is not None and st.state in (L.DOWNLOADED, L.FAILED), (item, st)
        if st.state == L.FAILED:
            assert st.error, f"{item}: failed without a reason"
    files = [f for f in image_files(out) if not Path(f).name.startswith(".")]
    downloaded = {i for i in sizes if state.items[i].state == L.DOWNLOADED}
    assert files == sorted(image_path(i) for i in downloaded)
    for item in downloaded:
        assert png_size(out / image_path(item)) == sizes[item], item

    # 2. paid at most once: no duplicate body, one accepted submit per item, none unknown to the ledger
    s = sb.stats()
    print(f"sandbox: {s}")
    assert s["faults_injected"].keys() >= {"429", "500", "502", "504", "reset", "lost", "failed", "truncate"}, s
    assert s["duplicates"] == 0, s
    assert s["submits_accepted"] == n, s
    assert [ev for ev in events if ev["event"] == "expired"] == []
    in_ledger = {ev["request_id"]: ev["item"] for ev in events if ev["event"] in ("submitted", "recovered")}
    service = sb.requests()
    assert {req["request_id"] for req in service} == set(in_ledger)
    assert sum(st.submits for st in state.items.values()) == s["submits_accepted"]

    # 3. delivered always: every request that COMPLETED reached its item's file
    for req in service:
        if req["phase"] == "COMPLETED":
            assert state.items[in_ledger[req["request_id"]]].state == L.DOWNLOADED, req
    by_history = [ev for ev in events if ev["event"] == "completed" and ev.get("how") == "history-by-id"]
    recovered = [ev for ev in events if ev["event"] == "recovered"]
    if downtimes & set(range(killed)):
        assert by_history, "records expired during a downtime, yet none was read from the history"
    print(f"chaos-with-history seed {seed}: {dict(Counter(st.state for st in state.items.values()))}, kills "
          f"{killed}, read from the history after expiry {len(by_history)}, lost answers found {len(recovered)}")


async def test_chaos_with_history_short(tmp_path: Path, sandbox_factory, start_cli) -> None:
    await chaos_with_history(tmp_path, sandbox_factory, start_cli, seed=seed_for(20262), n=400, kills=3,
                             downtimes={1}, rate_limited=SHORT_429)


@pytest.mark.slow
@pytest.mark.parametrize("default_seed", [8, 4321])
async def test_chaos_with_history_long(tmp_path: Path, sandbox_factory, start_cli, default_seed: int) -> None:
    await chaos_with_history(tmp_path, sandbox_factory, start_cli, seed=seed_for(default_seed), n=1200, kills=6,
                             downtimes={1, 4}, rate_limited=LONG_429)
