"""Each transport's streamed answers on a real socket: decoded in bounded pieces, failures typed.

Image downloads read what the transport hands them: a body decoded from gzip or deflate, never in
pieces longer than asked (a decompression bomb is stopped by the reader's cap, not by memory), and
every failure as a ``TransportError`` that says whether trying again can help. Also here: the
failures to connect that the circuit breaker counts (a refused port, no connection in time).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import anyio
import pytest
from aiohttp import web

from batchgen.api.client import Client, Retryable, Secret, Timeouts
from batchgen.api.transport import (
    BadEncoding,
    BodyIncomplete,
    ConnectFailed,
    Request,
    RequestTimeout,
    Transport,
    Unfetchable,
)
from tests.support.images import make_png
from tests.support.service import KEY, Service

PNG = make_png(64, 48)


@pytest.fixture
async def transport(transport_kind) -> AsyncIterator[Transport]:
    t = transport_kind(connections=4)
    await t.open()
    try:
        yield t
    finally:
        await t.aclose()


def get(url: str, connect: float = 2.0) -> Request:
    return Request("GET", url, {}, timeout=RequestTimeout(total=10.0, connect=connect, read=5.0), max_redirects=5)


def encoded(body: bytes, encoding: str = "gzip"):
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": "image/png", "Content-Encoding": encoding})

    return answer


async def test_a_gzip_body_arrives_decoded_with_no_length_to_compare(transport, service: Service) -> None:
    service.handle("GET", "/a.png", encoded(gzip.compress(PNG)))
    async with transport.stream(get(service.url + "/a.png")) as resp:
        assert resp.status == 200 and resp.content_length is None  # the header counts compressed bytes
        pieces = [p async for p in resp.content.iter_chunked(100)]
    assert b"".join(pieces) == PNG and max(map(len, pieces)) <= 100
    assert service.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


async def test_an_identity_body_keeps_its_length(transport, service: Service) -> None:
    service.on("GET", "/a.png", text=PNG, content_type="image/png")
    async with transport.stream(get(service.url + "/a.png")) as resp:
        assert resp.content_length == len(PNG)
        assert await resp.read() == PNG


async def test_a_bomb_is_handed_out_in_pieces_no_longer_than_asked(transport, service: Service) -> None:
    service.handle("GET", "/bomb", encoded(gzip.compress(b"\x00" * (64 << 20))))
    read = 0
    async with transport.stream(get(service.url + "/bomb")) as resp:
        async for piece in resp.content.iter_chunked(4096):
            assert len(piece) <= 4096
            read += len(piece)
            if read >= 1 << 20:
                break  # the reader's cap: it stops here, with 1 MiB of the 64 read
    assert read == 1 << 20


@pytest.mark.parametrize(
    ("body", "encoding", "error"),
    [
        (gzip.compress(PNG)[:-30], "gzip", BodyIncomplete),
        (b"\x1f\x8b\x08\x00 this is no gzip stream at all", "gzip", BadEncoding),
        (PNG, "zstd", BadEncoding),
    ],
    ids=["cut-short", "corrupt", "unknown"],
)
async def test_an_encoded_body_that_cannot_be_read_whole_is_typed(transport, service, body, encoding, error) -> None:
    service.handle("GET", "/x", encoded(body, encoding))
    with pytest.raises(error):
        async with transport.stream(get(service.url + "/x")) as resp:
            _ = [p async for p in resp.content.iter_chunked(1024)]


@pytest.mark.parametrize("target", ["file:///etc/passwd", "data:,hello"])
async def test_a_redirect_out_of_http_is_never_followed(transport, service: Service, target: str) -> None:
    service.on("GET", "/r", 302, text="moved", headers={"Location": target})
    with pytest.raises(Unfetchable, match="redirect to a .*: URL refused"):
        async with transport.stream(get(service.url + "/r")):
            pass
    assert len(service.requests) == 1


async def test_a_redirect_loop_is_unfetchable(transport, service: Service) -> None:
    service.on("GET", "/loop", 302, text="again", headers={"Location": "/loop"})
    with pytest.raises(Unfetchable, match="too many redirects"):
        async with transport.stream(get(service.url + "/loop")):
            pass


async def test_a_body_cut_mid_way_is_incomplete(transport, service: Service) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(PNG)
        await resp.prepare(request)
        await resp.write(PNG[:100])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    service.handle("GET", "/cut", cut)
    with pytest.raises(BodyIncomplete, match="closed mid-body"):
        async with transport.stream(get(service.url + "/cut")) as resp:
            _ = [p async for p in resp.content.iter_chunked(1024)]


async def test_a_refused_port_is_connect_failed_for_a_download_too(transport) -> None:
    with pytest.raises(ConnectFailed):
        async with transport.stream(get("http://127.0.0.1:1/a.png")):
            pass


async def test_no_connection_in_time_means_nothing_was_sent(service: Service, transport_kind) -> None:
    # One connection, held by a slow answer: the next request waits past its connect timeout.
    # It never left, so a submit that meets this cannot have been billed.
    release = anyio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"credits": 1})

    service.handle("GET", "/v1/get-user-credits", slow)
    timeouts = Timeouts(connect=0.2, api_total=5.0, read=5.0)
    async with Client(service.url, Secret(KEY), transport=transport_kind(connections=1), timeouts=timeouts) as c:
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.credits)
            await anyio.sleep(0.1)
            out = await c.submit("some-model", {"prompt": "x"})
            release.set()
    assert isinstance(out, Retryable) and out.sent is False
    assert "cannot connect (no connection within the timeout)" in out.message
