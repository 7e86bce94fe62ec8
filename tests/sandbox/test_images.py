import time

import pytest

from batchgen.models import IDEOGRAM_RESOLUTIONS, parse_resolution
from batchgen.sandbox.images import render_png
from tests.support.images import decode_png


@pytest.mark.parametrize(
    "resolution",
    [
        "RESOLUTION_1024_1024",
        "RESOLUTION_512_1536",
        "RESOLUTION_1536_640",
        "RESOLUTION_720_1280",
        "RESOLUTION_1312_736",
    ],
)
def test_exact_size_and_valid_png(resolution: str) -> None:
    width, height = parse_resolution(resolution)
    png = decode_png(render_png("a fox", 1234, width, height))
    assert (png.width, png.height) == (width, height)
    assert png.chunks == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]


def test_odd_sizes_are_valid_too() -> None:
    for w, h in [(1, 1), (3, 5), (17, 9), (1023, 2)]:
        png = decode_png(render_png("odd", 7, w, h))
        assert (png.width, png.height) == (w, h)


def test_deterministic_in_prompt_and_seed() -> None:
    a = render_png("same", 500, 640, 1024)
    render_png.cache_clear()
    assert render_png("same", 500, 640, 1024) == a


def test_prompt_or_seed_changes_pixels() -> None:
    base = decode_png(render_png("a red barn", 500, 1024, 1024)).raw
    assert decode_png(render_png("a red barn", 501, 1024, 1024)).raw != base
    assert decode_png(render_png("a blue barn", 500, 1024, 1024)).raw != base
    assert decode_png(render_png("a red barn", None, 1024, 1024)).raw != base


def test_every_listed_resolution_renders() -> None:
    for resolution in IDEOGRAM_RESOLUTIONS:
        w, h = parse_resolution(resolution)
        png = decode_png(render_png("all", 100, w, h))
        assert (png.width, png.height) == (w, h)


def test_throughput_uncached() -> None:
    render_png.cache_clear()
    n = 200
    start = time.perf_counter()
    for i in range(n):
        render_png(f"throughput {i}", i, 1024, 1024)
    elapsed = time.perf_counter() - start
    print(f"\nsandbox PNG encoder: {n / elapsed:.0f} uncached 1024x1024 images/s")
