"""A service nobody answers on: the run ends with 3 and one line naming the host, not hours of retries.

The port is a real one that was just closed (connection refused on every request). The breaker's
window is shortened with the hidden ``--unreachable-after`` flag; the default is a minute.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio

from batchgen.sandbox import Sandbox
from tests.support.cli import ledger_events, manifest_ids, run_cli, wait_for, write_manifest


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_refused_port_ends_the_run_with_3_and_one_line(tmp_path: Path) -> None:
    port = closed_port()
    manifest = write_manifest(tmp_path / "m.yaml", 40)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", f"http://127.0.0.1:{port}", "--out", out, "--no-progress",
                      "--unreachable-after", "2", within=90)
    assert r.code == 3, (r.out, r.err)
    stopped = [line for line in r.err.splitlines() if "stopped:" in line]
    assert len(stopped) == 1, r.err
    assert f"cannot reach 127.0.0.1:{port}" in stopped[0] and "nothing was billed since it went down" in stopped[0]
    assert "Connection refused" in stopped[0]
    assert "Traceback" not in r.err and "may be billed twice" not in r.out
    events = ledger_events(out)
    assert not [ev for ev in events if ev["event"] == "failed"]  # no item was given up on: the next run goes on
    tries = [ev for ev in events if ev["event"] == "submit_retry"]
    assert tries and all("cannot connect" in ev["error"] for ev in tries)
    assert len(tries) < 40  # fewer tries than items: not six per item


async def test_a_service_that_comes_back_within_the_window_is_waited_for(tmp_path: Path) -> None:
    port = closed_port()
    n = 4
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    async with anyio.create_task_group() as tg:
        results = []

        async def run() -> None:
            results.append(await run_cli("run", manifest, "--base-url", f"http://127.0.0.1:{port}", "--out", out,
                                         "--no-progress", "--unreachable-after", "60", within=90))

        tg.start_soon(run)
        # Up once the run has met the closed port, so the outage is one the run itself rode out.
        await wait_for(lambda: (out / "ledger.jsonl").exists() and any(
            ev["event"] == "submit_retry" for ev in ledger_events(out)), within=60, what="a refused submit")
        async with Sandbox(port=port, latency=0.05, latency_sigma=0.0):
            await wait_for(lambda: bool(results), within=60, what="the run's end")
    (r,) = results
    assert r.code == 0, (r.out, r.err)
    downloaded = {ev["item"] for ev in ledger_events(out) if ev["event"] == "downloaded"}
    assert downloaded == set(manifest_ids(n))
