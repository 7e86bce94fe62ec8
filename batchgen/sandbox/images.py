"""Cheap, deterministic, real PNG files for the emulator.

A load test downloads hundreds of images per second on a small machine, so the picture is a
coarse grid of flat cells in a 16-colour palette at 4 bits per pixel: every row of a band is the
same byte string, which makes building the raw data a handful of ``bytes`` multiplications and
lets zlib find long matches. Pixels depend on prompt and seed only, so a retry of the same item
yields the same file and different items yield visibly different ones.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from functools import lru_cache

__all__ = ["PNG_SIGNATURE", "render_png", "image_key"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BIT_DEPTH = 4
_COLOUR_TYPE_PALETTE = 3


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def image_key(prompt: str, seed: int | None) -> bytes:
    """Digest that drives every pixel; seed ``None`` is its own stable variant, like a fixed default."""
    return hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()


def _stream(digest: bytes, n: int) -> bytes:
    """Expand the digest into ``n`` pseudo-random bytes (deterministic, no global RNG state)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(digest + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:n])


def _boundaries(size: int, cells: int) -> list[int]:
    # Even inner boundaries keep every cell a whole number of 4-bit pixel pairs.
    inner = [((c * size) // cells) & ~1 for c in range(1, cells)]
    return [0, *inner, size]


@lru_cache(maxsize=512)
def render_png(prompt: str, seed: int | None, width: int, height: int) -> bytes:
    """Encoded PNG bytes of exactly ``width`` × ``height`` pixels; cached because polls repeat."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    digest = image_key(prompt, seed)
    cols = 6 + digest[0] % 11  # 6..16 cells across
    rows = 6 + digest[1] % 11
    rnd = _stream(digest, 48 + cols * rows)
    palette = rnd[:48]
    cells = rnd[48:]
    xb = _boundaries(width, cols)
    yb = _boundaries(height, rows)
    rowbytes = (width + 1) // 2
    parts: list[bytes] = []
    for r in range(rows):
        band_height = yb[r + 1] - yb[r]
        if band_height <= 0:
            continue
        line = bytearray(b"\x00")  # filter type 0 (None) for every scanline
        for c in range(cols):
            idx = cells[r * cols + c] & 0x0F
            run = xb[c + 1] - xb[c]
            line += bytes((idx << 4 | idx,)) * ((run + 1) // 2)
        del line[1 + rowbytes :]
        parts.append(bytes(line) * band_height)
    raw = b"".join(parts)
    ihdr = struct.pack(">IIBBBBB", width, height, _BIT_DEPTH, _COLOUR_TYPE_PALETTE, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"PLTE", palette),
            _chunk(b"IDAT", zlib.compress(raw, 1)),
            _chunk(b"IEND", b""),
        )
    )
