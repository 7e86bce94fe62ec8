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
async def start_cli() -> AsyncIterator[Any]:
    """``worker = await start_cli(*args)``; every worker still alive at the end is SIGKILLed."""
    workers: list[Worker] = []
    async with anyio.create_task_group() as tg:

        async def start(*args: Any, key: str | None = KEY) -> Worker:
            proc = await anyio.open_process(cli(*args), cwd=REPO, env=worker_env(key),
                                            stdin=subprocess.DEVNULL)
            w = Worker(proc)
            assert proc.stdout is not None and proc.stderr is not None
            tg.start_soon(w._drain, proc.stdout, "raw_out")
            tg.start_soon(w._drain, proc.stderr, "raw_err")
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


