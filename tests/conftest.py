"""Shared fixtures: a running Segmind emulator for any test that needs a server.

``sandbox``
    A started :class:`batchgen.sandbox.Sandbox` on a free loopback port with fast jobs
    (mean latency 0.05 s, no spread, no faults, any non-empty key). Point clients at ``sandbox.url``
    (the SDK wants ``f"{sandbox.url}/v1"``); read counters with ``sandbox.stats()``.

``sandbox_factory``
    An async context factory for custom settings, closed at the end of the test::

        async def test_x(sandbox_factory):
            sb = await sandbox_factory(rpm=5, faults="429=0.1", fault_seed=1)
            ...

    Keywords are :class:`batchgen.sandbox.SandboxConfig` fields (plus ``clock=`` to drive time
    by hand); unspecified ones take the fast defaults above.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from batchgen.sandbox import Sandbox

FAST_DEFAULTS: dict[str, Any] = {"latency": 0.05, "latency_sigma": 0.0}

SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    started: list[Sandbox] = []

    async def make(**options: Any) -> Sandbox:
        clock = options.pop("clock", None)
        extra = {"clock": clock} if clock is not None else {}
        sb = Sandbox(**extra, **{**FAST_DEFAULTS, **options})
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
    return await sandbox_factory()
