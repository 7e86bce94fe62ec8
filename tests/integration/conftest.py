"""Fixtures of the end-to-end tests; plain helpers live in ``itkit``."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from itkit import KEY, REPO, Worker, cli, worker_env

from batchgen.sandbox import Sandbox


@pytest.fixture
async def start_cli(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """``worker = await start_cli(*args)``; every worker still alive at the end is SIGKILLed."""
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
async def sandbox_at() -> AsyncIterator[Any]:
    """``sb = await sandbox_at(**SandboxConfig fields)``: a started sandbox, closed after the test."""
    started: list[Sandbox] = []

    async def make(**options: Any) -> Sandbox:
        options.setdefault("latency_sigma", 0.2)
        sb = Sandbox(**options)
        await sb.start()
        started.append(sb)
        return sb

    try:
        yield make
    finally:
        for sb in reversed(started):
            await sb.close()


