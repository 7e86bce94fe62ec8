"""Is a byte string a complete image? Signatures and end markers of PNG, JPEG and WebP.

A file only reaches its final name after passing these checks, which is what lets every later
reader trust that an image under its final name is whole.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from batchgen.core.errors import BatchgenError

__all__ = ["ImageInfo", "ImageError", "sniff", "verify"]

PNG_SIG = b"\x89PNG\r\n\x1a\n"


class ImageError(BatchgenError, ValueError):
    """Bytes that are not a complete image of a known format."""


@dataclass(frozen=True)
class ImageInfo:
    ext: str
    width: int | None
    height: int | None


def sniff(head: bytes) -> str | None:
    """The image type from the first bytes, so a non-image can be refused before it is stored."""
    if head.startswith(PNG_SIG):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def verify(data: bytes) -> ImageInfo:
    kind = sniff(data[:16])
    if kind == "png":
        return _verify_png(data)
    if kind == "jpg":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ImageError("JPEG has no end-of-image marker (truncated)")
        return ImageInfo("jpg", None, None)
    if kind == "webp":
        (size,) = struct.unpack("<I", data[4:8])
        if size + 8 != len(data):
            raise ImageError(f"WebP RIFF size {size + 8} does not match {len(data)} bytes (truncated)")
        return ImageInfo("webp", None, None)
    raise ImageError("not a PNG, JPEG or WebP image")


def _verify_png(data: bytes) -> ImageInfo:
    pos = len(PNG_SIG)
    width = height = None
    seen_iend = False
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ImageError(f"PNG chunk {ctype!r} runs past the end of the file (truncated)")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise ImageError(f"PNG chunk {ctype!r} has a bad CRC")
        if ctype == b"IHDR":
            width, height = struct.unpack(">II", data[pos + 8 : pos + 16])
        if ctype == b"IEND":
            seen_iend = True
            break
        pos = end
    if not seen_iend:
        raise ImageError("PNG has no IEND chunk (truncated)")
    if width is None:
        raise ImageError("PNG has no IHDR chunk")
    return ImageInfo("png", width, height)


def verify_edges(head: bytes, tail: bytes, size: int) -> ImageInfo:
    """Check a streamed image from its first and last bytes only, so memory stays flat.

    ``head`` holds at least the first 33 bytes (PNG signature + IHDR), ``tail`` the last 12 or
    more. A truncated stream cannot end in a well-formed IEND / EOI marker or match a RIFF size.
    """
    kind = sniff(head[:16])
    if kind == "png":
        if len(head) < 33 or head[12:16] != b"IHDR":
            raise ImageError("PNG has no IHDR chunk")
        (crc,) = struct.unpack(">I", head[29:33])
        if zlib.crc32(head[12:29]) != crc:
            raise ImageError("PNG IHDR has a bad CRC")
        width, height = struct.unpack(">II", head[16:24])
        if tail[-12:] != b"\x00\x00\x00\x00IEND\xaeB`\x82":
            raise ImageError("PNG does not end with IEND (truncated)")
        return ImageInfo("png", width, height)
    if kind == "jpg":
        if not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ImageError("JPEG has no end-of-image marker (truncated)")
        return ImageInfo("jpg", None, None)
    if kind == "webp":
        (declared,) = struct.unpack("<I", head[4:8])
        if declared + 8 != size:
            raise ImageError(f"WebP RIFF size {declared + 8} does not match {size} bytes (truncated)")
        return ImageInfo("webp", None, None)
    raise ImageError("not a PNG, JPEG or WebP image")
