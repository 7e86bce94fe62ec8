"""PNG helpers for every suite: a minimal valid PNG to serve, and strict decoders to check one."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path


def make_png(width: int = 2, height: int = 2) -> bytes:
    """A minimal valid greyscale PNG (signature, IHDR, IDAT, IEND with correct CRCs)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(x % 256 for x in range(width)) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


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


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a fully valid PNG (signature, every chunk CRC, IHDR, IDAT inflates, IEND)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, chunks, idat = 8, [], b""
    width = height = bit_depth = colour = None
    while pos < len(data):
        assert pos + 12 <= len(data), f"{path}: truncated chunk header"
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert len(body) == length, f"{path}: truncated {kind!r}"
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"{path}: bad CRC in {kind!r}"
        chunks.append(kind)
        if kind == b"IHDR":
            width, height, bit_depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", f"{path}: chunks {chunks}"
    assert width and height and bit_depth
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = 1 + (width * channels * bit_depth + 7) // 8
    assert len(zlib.decompress(idat)) == row * height, f"{path}: pixel data does not fill {width}x{height}"
    return width, height
