"""Image completeness checks: whole-buffer ``verify`` and streamed ``verify_edges`` agree."""

from __future__ import annotations

import struct
import zlib

import pytest

from batchgen.sandbox.images import render_png
from batchgen.store.imagecheck import ImageError, ImageInfo, sniff, verify, verify_edges
from tests.support.images import make_png


def edges(data: bytes) -> ImageInfo:
    return verify_edges(data[:64], data[-64:], len(data))


def both(data: bytes) -> list[ImageInfo]:
    return [verify(data), edges(data)]


def jpeg(with_eoi: bool = True) -> bytes:
    body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 4
    return body + (b"\xff\xd9" if with_eoi else b"")


def webp(payload: bytes = b"VP8 " + b"\x00" * 40) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(payload)) + b"WEBP" + payload


@pytest.mark.parametrize("png", [make_png(3, 5), render_png("a red fox", 7, 96, 64)])
def test_valid_png_passes_with_its_size(png):
    w, h = struct.unpack(">II", png[16:24])
    for info in both(png):
        assert info == ImageInfo("png", w, h)


def test_truncated_png_fails():
    png = render_png("a red fox", 7, 96, 64)
    for cut in (len(png) - 1, len(png) - 12, len(png) // 2, 40):
        with pytest.raises(ImageError):
            verify(png[:cut])
        with pytest.raises(ImageError):
            edges(png[:cut])


def test_png_with_a_wrong_crc_fails():
    png = bytearray(make_png(4, 4))
    idat = png.index(b"IDAT")
    png[idat + 6] ^= 0xFF  # a flipped byte inside IDAT: its CRC no longer matches
    with pytest.raises(ImageError, match="CRC"):
        verify(bytes(png))
    ihdr_bad = bytearray(make_png(4, 4))
    ihdr_bad[18] ^= 0x01  # width byte: IHDR CRC breaks, which the streamed check can see
    with pytest.raises(ImageError, match="CRC"):
        verify(bytes(ihdr_bad))
    with pytest.raises(ImageError, match="CRC"):
        edges(bytes(ihdr_bad))


def test_png_without_iend_fails():
    png = make_png()
    without = png[:-12]
    with pytest.raises(ImageError, match="IEND"):
        verify(without)
    with pytest.raises(ImageError, match="IEND"):
        edges(without)


def test_jpeg_with_and_without_end_marker():
    for info in both(jpeg()):
        assert info.ext == "jpg"
    with pytest.raises(ImageError, match="end-of-image"):
        verify(jpeg(with_eoi=False))
    with pytest.raises(ImageError, match="end-of-image"):
        edges(jpeg(with_eoi=False))


def test_webp_riff_size_must_match():
    good = webp()
    for info in both(good):
        assert info.ext == "webp"
    for bad in (good[:-5], good + b"\x00\x00"):
        with pytest.raises(ImageError, match="RIFF size"):
            verify(bad)
        with pytest.raises(ImageError, match="RIFF size"):
            edges(bad)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html><body>Access denied</body></html>",
        b'{"error": "expired"}',
        b"GIF89a" + b"\x00" * 40,
        b"\x89PNG",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ],
)
def test_non_images_are_refused(data):
    assert sniff(data[:16]) is None
    with pytest.raises(ImageError):
        verify(data)
    with pytest.raises(ImageError):
        verify_edges(data[:64], data[-64:], len(data))


def test_png_signature_with_bad_chunk_length_is_refused():
    sig = b"\x89PNG\r\n\x1a\n"
    bogus = sig + struct.pack(">I", 2**31) + b"IHDR" + b"\x00" * 20
    with pytest.raises(ImageError):
        verify(bogus)
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    only_ihdr = sig + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    with pytest.raises(ImageError):
        verify(only_ihdr)
    with pytest.raises(ImageError):
        edges(only_ihdr)
