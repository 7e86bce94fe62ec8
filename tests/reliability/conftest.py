"""Fixtures of the reliability suites; they reuse the end-to-end helpers of ``tests/integration``."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from itkit import KEY, REPO, Worker, cli, worker_env  # noqa: E402

from batchgen.sandbox import Sandbox  # noqa: E402


@pytest.fixture
async def start_worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """``worker = await start_worker(*args)``; every worker still alive at the end is SIGKILLed."""
    workers: list[Worker] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    async def start(*args: Any, key: str | None = KEY) -> Worker:
        n = len(workers)
        out_path, err_path = logs / f"{n}.out", logs / f"{n}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:  # noqa: ASYNC230 - handed to the child
            proc = await anyio.open_process(cli(*args), cwd=REPO, env=worker_env(key),
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        w = Worker(proc, out_path, err_path)
        workers.append(w)
        return w

    try:
        yield start
    finally:
        for w in workers:
            if w.proc.returncode is None:
                w.proc.send_signal(signal.SIGKILL)
            with anyio.move_on_after(10):
                await w.proc.wait()
            await w.proc.aclose()


@pytest.fixture
async def make_sandbox() -> AsyncIterator[Any]:
    """``sb = await make_sandbox(**SandboxConfig fields, clock=...)``: started, closed after the test."""
    started: list[Sandbox] = []

    async def make(**options: Any) -> Sandbox:
        sb = Sandbox(**options)
        await sb.start()
        started.append(sb)
        return sb

    try:
        yield make
    finally:
        for sb in reversed(started):
            await sb.close()
