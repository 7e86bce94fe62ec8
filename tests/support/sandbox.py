"""Sandbox fixtures: a started emulator (``sandbox``, ``sandbox_factory``), a keyed session, a hand-driven clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from batchgen.sandbox import Sandbox

# Fast jobs (mean latency 0.05 s, no spread, no faults, any non-empty key) unless a test says otherwise.
FAST_DEFAULTS: dict[str, Any] = {"latency": 0.05, "latency_sigma": 0.0}

SandboxFactory = Callable[..., Awaitable[Sandbox]]


class FakeClock:
    """Monotonic clock moved by hand, so time-dependent behaviour is tested without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"x-api-key": "test-key"}) as session:
        yield session


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    """``sb = await sandbox_factory(**SandboxConfig fields, clock=...)``: started, closed after the test.

    Unspecified fields take ``FAST_DEFAULTS``; point clients at ``sb.url`` (the SDK wants
    ``f"{sb.url}/v1"``) and read counters with ``sb.stats()``.
    """
    started: list[Sandbox] = []

    async def make(**options: Any) -> Sandbox:
        sb = Sandbox(**{**FAST_DEFAULTS, **options})
        await sb.start()
        started.append(sb)
        return sb

    try:
        yield make
    finally:
        for sb in reversed(started):
            await sb.close()


@pytest.fixture
async def sandbox(sandbox_factory: SandboxFactory) -> Sandbox:
    """A started sandbox with ``FAST_DEFAULTS``."""
    return await sandbox_factory()
