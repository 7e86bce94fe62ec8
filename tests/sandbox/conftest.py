"""Helpers for the emulator's own tests: a keyed HTTP session, a hand-driven clock, PNG decoding."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest


class FakeClock:
    """Monotonic clock moved by hand, so time-dependent behaviour is tested without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class DecodedPng:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    raw: bytes
    chunks: list[bytes]


def decode_png(data: bytes) -> DecodedPng:
    """Strict enough to catch a broken encoder: signature, chunk CRCs, IEND last, scanline layout."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    pos = 8
    chunks: list[bytes] = []
    idat = b""
    ihdr = b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
    width, height, depth, ctype, _, _, _ = struct.unpack(">IIBBBBB", ihdr)
    raw = zlib.decompress(idat)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    rowbytes = (width * channels * depth + 7) // 8
    assert len(raw) == height * (1 + rowbytes), "decompressed length does not match the header"
    assert all(raw[r * (1 + rowbytes)] <= 4 for r in range(height)), "bad filter byte"
    return DecodedPng(width, height, depth, ctype, raw, chunks)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"x-api-key": "test-key"}) as session:
        yield session
