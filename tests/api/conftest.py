"""Fixtures of the HTTP/1.1 client's tests: a bare scripted server and the transport under test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from batchgen.api.http11 import Http11Transport
from tests.api.test_http11 import Bare, serve


@pytest.fixture
async def bare() -> AsyncIterator[Bare]:
    b = Bare()
    server = await serve(b)
    try:
        yield b
    finally:
        server.close()


@pytest.fixture
async def transport() -> AsyncIterator[Http11Transport]:
    """The default transport (tests/api/test_transport_downloads.py has its own, of either kind)."""
    t = Http11Transport(connections=4)
    await t.open()
    try:
        yield t
    finally:
        await t.aclose()
