"""fetch_to_file: only http(s) and inline base64, verified bytes, nothing half-written left behind."""

from __future__ import annotations

import asyncio
import base64
import errno
import gzip
import hashlib
import io
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batchgen.api.client import Client, Secret, Timeouts
from batchgen.engine import download
from batchgen.engine.download import DiskFull, DownloadError, fetch_to_file
from batchgen.sandbox.images import render_png
from tests.engine.fakes import FakeClient
from tests.support.service import KEY

CAP = 1 << 20
PNG = render_png("a lighthouse at dusk", 11, 128, 96)


@pytest.fixture
async def dl(service):
    async with Client(service.url, Secret(KEY), timeouts=Timeouts(connect=2, read=2, download_total=5)) as c:
        yield c


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


async def test_success_stores_id_png_with_its_sha256(dl, service, images, tmp_path):
    service.on("GET", "/out/a.png", text=PNG, content_type="image/png")
    stored = await fetch_to_file(dl, service.url + "/out/a.png", images, "item-1", CAP)
    assert stored.file == images / "item-1.png"
    assert stored.file.read_bytes() == PNG
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert stored.bytes == len(PNG)
    assert (stored.width, stored.height) == (128, 96)
    assert tree(tmp_path) == ["images", "images/item-1.png"]
    assert "x-api-key" not in {k.lower() for k in service.requests[0].headers}


async def test_success_in_many_chunks_without_length(dl, service, images):
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        for i in range(0, len(PNG), 1000):
            await resp.write(PNG[i : i + 1000])
        await resp.write_eof()
        return resp

    service.handle("GET", "/out/c.png", chunked)
    stored = await fetch_to_file(dl, service.url + "/out/c.png", images, "c", CAP)
    assert stored.file.read_bytes() == PNG


async def test_data_uri_base64_png_is_stored(dl, images, tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    stored = await fetch_to_file(dl, uri, images, "inline", CAP)
    assert stored.file == images / "inline.png"
    assert stored.file.read_bytes() == PNG
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert tree(tmp_path) == ["images", "images/inline.png"]


async def test_bare_base64_as_extracted_from_a_result_is_stored(dl, images):
    uri = "data:application/octet-stream;base64," + base64.b64encode(PNG).decode()
    stored = await fetch_to_file(dl, uri, images, "bare", CAP)
    assert stored.file.read_bytes() == PNG


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://cdn/x.png", "images/../../x.png", "", "javascript:alert(1)", "FILE:///x"],
)
async def test_other_schemes_are_refused_and_nothing_is_written(dl, service, images, tmp_path, url):
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, url, images, "x", CAP)
    assert ei.value.retryable is False
    assert tree(tmp_path) == ["images"]
    assert service.requests == []


async def test_truncated_body_is_retryable_and_leaves_nothing(dl, service, images, tmp_path):
    async def short(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(PNG)
        await resp.prepare(request)
        await resp.write(PNG[: len(PNG) // 2])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    service.handle("GET", "/out/t.png", short)
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/t.png", images, "t", CAP)
    assert ei.value.retryable is True
    assert tree(tmp_path) == ["images"]  # no t.png and no .part file


async def test_body_that_ends_early_without_a_length_is_retryable(dl, service, images, tmp_path):
    # Chunked transfer cut at a chunk boundary after a valid prefix: the image check catches it.
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        await resp.write(PNG[:-20])
        await resp.write_eof()
        return resp

    service.handle("GET", "/out/cut.png", cut)
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/cut.png", images, "cut", CAP)
    assert ei.value.retryable is True
    assert tree(tmp_path) == ["images"]


async def test_over_cap_stream_is_not_retryable(dl, service, images, tmp_path):
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        await resp.write(PNG[:64])
        for _ in range(40):
            await resp.write(b"\x00" * 65536)
        await resp.write_eof()
        return resp

    service.handle("GET", "/out/big.png", endless)
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/big.png", images, "big", CAP)
    assert ei.value.retryable is False
    assert "cap" in str(ei.value)
    assert tree(tmp_path) == ["images"]


async def test_declared_length_over_cap_is_refused_before_reading(dl, service, images, tmp_path):
    service.on("GET", "/out/huge.png", text=PNG + b"\x00" * CAP, content_type="image/png")
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/huge.png", images, "huge", CAP)
    assert ei.value.retryable is False
    assert tree(tmp_path) == ["images"]


async def test_inline_image_over_cap_is_refused(dl, images, tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, uri, images, "x", len(PNG) // 2)
    assert ei.value.retryable is False
    assert tree(tmp_path) == ["images"]


async def test_non_image_is_refused(dl, service, images, tmp_path):
    page = b"<html><head><title>AccessDenied</title></head><body>Request has expired</body></html>"
    service.on("GET", "/out/e.png", text=page, content_type="text/html")
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/e.png", images, "e", CAP)
    assert ei.value.retryable is False
    assert tree(tmp_path) == ["images"]


async def test_inline_non_image_is_not_retryable(dl, images, tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(b"<html>not an image at all</html>" * 4).decode()
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, uri, images, "x", CAP)
    assert tree(tmp_path) == ["images"]
    assert ei.value.retryable is False


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (404, False), (429, True), (503, True)])
async def test_http_errors_from_the_file_host(dl, service, images, tmp_path, status, retryable):
    service.on("GET", "/out/s.png", status, text="nope")
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/s.png", images, "s", CAP)
    assert ei.value.retryable is retryable
    assert tree(tmp_path) == ["images"]


async def test_an_existing_final_file_is_only_replaced_by_a_verified_one(dl, service, images):
    (images / "keep.png").write_bytes(PNG)
    service.on("GET", "/out/bad.png", text=PNG[:-30], content_type="image/png")
    with pytest.raises(DownloadError):
        await fetch_to_file(dl, service.url + "/out/bad.png", images, "keep", CAP)
    assert (images / "keep.png").read_bytes() == PNG


def test_partials_left_by_a_killed_run_are_swept_and_images_kept(tmp_path):
    from batchgen.engine.download import sweep_partials

    images = tmp_path / "images"
    images.mkdir()
    (images / ".a.1234abcd.part").write_bytes(b"\x89PNG half")
    (images / ".b.99999999.part").write_bytes(b"")
    (images / "a.png").write_bytes(b"kept")
    assert sweep_partials(images) == 2
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]


# ---- encoded bodies, redirects out of http, inline images that cannot be whole -----------------


def gzip_answer(body: bytes, encoding: str = "gzip"):
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": "image/png", "Content-Encoding": encoding})

    return answer


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
async def test_an_image_served_compressed_is_decoded_and_stored(dl, service, images, encoding):
    # CDNs gzip images; the Content-Length then counts the compressed bytes, not the image's.
    packed = zlib.compress(PNG) if encoding == "deflate" else gzip.compress(PNG)
    service.handle("GET", "/out/z.png", gzip_answer(packed, encoding))
    stored = await fetch_to_file(dl, service.url + "/out/z.png", images, "z", CAP)
    assert stored.file.read_bytes() == PNG
    assert stored.bytes == len(PNG) and stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert service.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


async def test_a_decompression_bomb_stops_at_the_cap_for_good(dl, service, images, tmp_path):
    # 64 KiB on the wire, 64 MiB inflated: stopped at the cap, never held whole.
    bomb = gzip.compress(PNG[:64] + b"\x00" * (64 << 20), compresslevel=9)
    assert len(bomb) < CAP // 4
    service.handle("GET", "/out/bomb.png", gzip_answer(bomb))
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/bomb.png", images, "bomb", CAP)
    assert ei.value.retryable is False and f"exceeds the {CAP}-byte cap" in str(ei.value)
    assert tree(tmp_path) == ["images"]


@pytest.mark.parametrize(
    ("body", "encoding", "retryable", "said"),
    [
        (gzip.compress(PNG)[:-40], "gzip", True, "truncated download: the gzip body ended before its end"),
        (b"\x1f\x8b\x08\x00 this is no gzip stream at all", "gzip", False, "the gzip body is corrupt"),
        (PNG, "br", False, "Content-Encoding 'br' cannot be decoded"),
    ],
    ids=["cut-short", "corrupt", "unknown-encoding"],
)
async def test_an_encoded_body_that_cannot_be_read_whole(dl, service, images, tmp_path, body, encoding, retryable, said):
    service.handle("GET", "/out/bad.png", gzip_answer(body, encoding))
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/bad.png", images, "bad", CAP)
    assert ei.value.retryable is retryable and said in str(ei.value)
    assert tree(tmp_path) == ["images"]


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://cdn.example/a.png", "data:image/png;base64,AAAA"])
async def test_a_redirect_out_of_http_is_refused_for_good(dl, service, images, tmp_path, target):
    service.on("GET", "/out/r.png", 302, text="moved", headers={"Location": target})
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(dl, service.url + "/out/r.png", images, "r", CAP)
    assert ei.value.retryable is False
    assert str(ei.value) == f"image download: redirect to a {target.split(':')[0]}: URL refused"
    assert tree(tmp_path) == ["images"] and len(service.requests) == 1


@pytest.mark.parametrize(
    "payload",
    [PNG[: len(PNG) // 2], PNG[:-20], PNG[:8]],
    ids=["half", "no-end-marker", "signature-only"],
)
async def test_an_inline_image_that_is_not_whole_is_not_retryable(images, tmp_path, payload):
    # The bytes are in the URL: every try reads the same ones, so trying again only pays again.
    uri = "data:image/png;base64," + base64.b64encode(payload).decode()
    with pytest.raises(DownloadError) as ei:
        await fetch_to_file(FakeClient(), uri, images, "x", CAP)
    assert ei.value.retryable is False and "incomplete image" in str(ei.value)
    assert tree(tmp_path) == ["images"]


async def test_a_download_that_cannot_connect_is_retryable_and_says_why(images, tmp_path):
    async with Client("http://127.0.0.1:1", Secret(KEY), timeouts=Timeouts(connect=2, read=2)) as c:
        with pytest.raises(DownloadError) as ei:
            await fetch_to_file(c, "http://127.0.0.1:1/out/a.png", images, "a", CAP)
    assert ei.value.retryable is True and str(ei.value).startswith("image download failed (cannot connect")


class _ShortWrites(io.FileIO):
    """A file whose write(2) takes at most ``step`` bytes a call, as a kernel may, and only ``room``
    in all (then ENOSPC, as a disk that fills mid-write does)."""

    step, room, calls = 100, 1 << 30, 0

    def write(self, b: Any) -> int:
        type(self).calls += 1
        n = min(len(b), self.step, self.room)
        if n == 0 and len(b):
            raise OSError(errno.ENOSPC, "No space left on device")
        type(self).room -= n
        return super().write(memoryview(b)[:n])


@pytest.mark.parametrize("room", [1 << 30, 250])
async def test_a_write_that_takes_part_of_a_chunk_never_leaves_a_short_image(images, tmp_path, monkeypatch, room):
    monkeypatch.setattr(_ShortWrites, "room", room)
    monkeypatch.setattr(_ShortWrites, "calls", 0)
    monkeypatch.setattr(download, "open", lambda fd, mode, buffering=-1: _ShortWrites(fd, "wb"), raising=False)
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()  # one chunk of the whole image
    if room > len(PNG):
        stored = await fetch_to_file(FakeClient(), uri, images, "s", CAP)
        assert stored.file.read_bytes() == PNG
        assert stored.bytes == len(PNG)
    else:
        with pytest.raises(DiskFull):
            await fetch_to_file(FakeClient(), uri, images, "s", CAP)
        assert tree(tmp_path) == ["images"]
    assert _ShortWrites.calls > 1  # the short writes were met, not bypassed
