"""Chaos: every fault the service can throw, at once, while the worker is SIGKILLed and resumed.

The promises under test are the ones money depends on: every item ends downloaded or failed with a
reason, no file under its final name is incomplete, nothing is paid twice beyond what a crash or a
lost answer can cause (and what expired while no worker was running, which the ledger says), and
no result that reached COMPLETED was left unread by a running worker. The service here has no
request history, so these are the bounds without one; test_chaos_recovery.py has the same chaos
with a history, where nothing is paid twice.

Replay a failure with the seed it printed: ``BATCHGEN_CHAOS_SEED=<seed> pytest tests/reliability -k chaos``.
The seed fixes the manifest, the service's fault draws and the kill schedule; the moments of the
kills are counted in ledger lines, so a replay kills at the same points of progress.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from batchgen.store import ledger as L
from tests.support.cli import (
    image_files,
    image_path,
    ledger_events,
    ledger_lines,
    resolution_size,
    run_cli,
    wait_for,
)
from tests.support.images import png_size

# Every kind at once. Each 429 pauses the whole run until its window resets, so the short form
# keeps them rarer to stay quick; the long form uses the storm rate.
FAULTS = "500=0.03,502=0.02,504=0.02,reset=0.02,lost=0.02,failed=0.02,truncate=0.03,slow=0.005"
SHORT_429, LONG_429 = 0.01, 0.04
RESOLUTIONS = ("RESOLUTION_640_1024", "RESOLUTION_1024_640", "RESOLUTION_576_1408", "RESOLUTION_704_1152")
RETENTION = 3600.0
TIME_SCALE = 0.2  # service seconds -> real seconds: 1.5 s generations take 0.3 s


class JumpClock:
    """The service's clock; ``jump`` plays a worker that stayed down for longer than the retention."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds


def chaos_manifest(path: Path, n: int, rng: random.Random) -> dict[str, tuple[int, int]]:
    """``n`` distinct items of mixed sizes; returns the expected size of each item's image."""
    sizes: dict[str, tuple[int, int]] = {}
    lines = ["model: ideogram-txt-2-img", "defaults:", "  style_type: GENERAL", "items:"]
    for i in range(n):
        item = f"c-{i:04d}"
        res = rng.choice(RESOLUTIONS)
        sizes[item] = resolution_size(res)
        lines += [f"  - id: {item}", f'    prompt: "Chaos picture {i}"', f"    seed: {100 + i}",
                  f"    resolution: {res}"]
    path.write_text("\n".join(lines) + "\n")
    return sizes


def seed_for(default: int) -> int:
    raw = os.environ.get("BATCHGEN_CHAOS_SEED")
    return int(raw) if raw else default


async def chaos(tmp_path: Path, sandbox_factory, start_cli, *, seed: int, n: int, kills: int,
                jumps: set[int], rate_limited: float) -> None:
    print(f"chaos seed {seed}: {n} items, {kills} kills, record expiry during downtime after kills {sorted(jumps)}"
          f" (replay: BATCHGEN_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    clock = JumpClock()
    # Without a request history: what the worker promises when it has none to recover from (with
    # one, nothing is paid twice at all: test_chaos_recovery.py).
    sb = await sandbox_factory(latency=1.5, latency_sigma=0.5, time_scale=TIME_SCALE, slow_seconds=5.0,
                            faults=f"429={rate_limited},{FAULTS}", fault_seed=seed, retention=RETENTION, clock=clock,
                            history=False)
    sizes = chaos_manifest(tmp_path / "chaos.yaml", n, rng)
    out = tmp_path / "out"
    args = ("run", tmp_path / "chaos.yaml", "--base-url", sb.url, "--out", out, "--no-progress",
            "--concurrency", "32", "--rpm", "60000")

    killed = 0
    for k in range(kills):
        target = ledger_lines(out) + rng.randint(n // 4, n)
        pause = rng.uniform(0.0, 0.3)
        worker = await start_cli(*args)
        await wait_for(lambda t=target, w=worker: ledger_lines(out) >= t or w.returncode is not None, within=120)
        if worker.returncode is not None:
            break  # it finished before this kill: the rest of the schedule has nothing to interrupt
        await anyio.sleep(pause)
        worker.signal(signal.SIGKILL)
        r = await worker.wait(within=20)
        assert r.code == -signal.SIGKILL, (r.code, r.err[-2000:])
        killed += 1
        L.replay(out / "ledger.jsonl")  # a torn tail is tolerated, a corrupt line is not
        if k in jumps:
            clock.jump(RETENTION * TIME_SCALE + 1)  # every record submitted so far is gone when the worker returns
    assert killed >= 1, "the worker finished before the first kill: the schedule interrupted nothing"

    final = await run_cli(*args, within=240)
    print(final.out[-2000:], final.err[-2000:])
    assert final.code in (0, 1), (final.code, final.err[-2000:])
    assert "Traceback" not in final.err

    # 1. the ledger replays cleanly, and every item is downloaded or failed with a reason
    state = L.replay(out / "ledger.jsonl")
    assert not state.torn_tail
    events = ledger_events(out)
    ends = [ev for ev in events if ev["event"] == "run_end"]
    assert ends[-1]["exit_code"] == final.code
    for item in sizes:
        st = state.items.get(item)
        assert st is not None, f"{item}: not in the ledger"
        assert st.state in (L.DOWNLOADED, L.FAILED), f"{item}: left in state {st.state}"
        if st.state == L.FAILED:
            assert st.error, f"{item}: failed without a reason"
    if final.code == 0:
        assert all(state.items[i].state == L.DOWNLOADED for i in sizes)

    # 2. every file under its final name is a complete image of the item's size
    files = {name: out / name for name in image_files(out) if not name.rsplit("/", 1)[-1].startswith(".")}
    downloaded = {i for i in sizes if state.items[i].state == L.DOWNLOADED}
    assert set(files) == {image_path(i) for i in downloaded}
    for item in downloaded:
        assert png_size(files[image_path(item)]) == sizes[item], item
        assert state.items[item].file == image_path(item)

    # 3. paying twice is bounded, and every extra payment is accounted for
    s = sb.stats()
    expired_events = [ev for ev in events if ev["event"] == "expired"]
    print(f"sandbox: {s}")
    assert s["faults_injected"].keys() >= {"429", "500", "502", "504", "reset", "lost", "failed", "truncate"}, s
    assert s["duplicates"] <= killed + s["lost_submit_answers"] + len(expired_events), s
    if jumps & set(range(killed)):
        assert expired_events, "records expired during a downtime, yet the ledger records no expiry"

    # 4. the service's view of every request agrees with the ledger
    submitted_rid = {ev["request_id"]: ev["item"] for ev in events if ev["event"] == "submitted"}
    completed_rid = {ev["request_id"] for ev in events if ev["event"] == "completed"}
    expired_rid = {ev["request_id"] for ev in expired_events}
    position = {id(ev): n for n, ev in enumerate(events)}
    unrecorded = 0
    for req in sb.requests():
        rid = req["request_id"]
        if rid not in submitted_rid:
            unrecorded += 1  # accepted while its answer was lost or the worker died: the bounded case
            continue
        if req["phase"] != "COMPLETED":
            continue
        item = submitted_rid[rid]
        if rid in completed_rid:
            assert req["fetched"], f"{rid}: the ledger says completed, the service never served it"
            continue
        # A paid result nobody read: allowed only if its record expired while no worker ran,
        # and then the ledger says so and the item was submitted again.
        assert rid in expired_rid, f"{item}: COMPLETED request {rid} went unread and unexplained"
        assert req["record_expired"], f"{item}: {rid} marked expired while its record still lived"
        exp = next(ev for ev in expired_events if ev["request_id"] == rid)
        later = [ev for ev in events if ev["item"] == item and position[id(ev)] > position[id(exp)]]
        assert any(ev["event"] == "submitted" for ev in later) or later[-1]["event"] == "failed", (
            f"{item}: expired unread and never submitted again")
    assert unrecorded <= killed + s["lost_submit_answers"], (unrecorded, killed, s)
    assert sum(st.submits for st in state.items.values()) == s["submits_accepted"] - unrecorded

    counts = Counter(st.state for st in state.items.values())
    print(f"chaos seed {seed}: {dict(counts)}, kills {killed}, expired {len(expired_events)}, "
          f"unrecorded submits {unrecorded}")


async def test_chaos_short(tmp_path: Path, sandbox_factory, start_cli) -> None:
    await chaos(tmp_path, sandbox_factory, start_cli, seed=seed_for(20261), n=500, kills=3, jumps={1},
                rate_limited=SHORT_429)


@pytest.mark.slow
@pytest.mark.parametrize("default_seed", [7, 1234, 99991])
async def test_chaos_long(tmp_path: Path, sandbox_factory, start_cli, default_seed: int) -> None:
    await chaos(tmp_path, sandbox_factory, start_cli, seed=seed_for(default_seed), n=1500, kills=7, jumps={1, 4},
                rate_limited=LONG_429)
