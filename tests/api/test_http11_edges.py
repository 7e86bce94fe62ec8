"""The HTTP/1.1 transport against answers at the edge of the protocol, from a bare scripted server.

Whatever a server sends must end as an answer or a ``TransportError`` (never another exception the
engine would not classify), and a connection whose framing is in doubt must not carry another request.
"""

from __future__ import annotations

import asyncio

import pytest

from batchgen.api.http11 import Http11Transport
from batchgen.api.transport import ConnectFailed, TransportError, Unfetchable
from tests.api.test_http11 import OK, get, post


@pytest.mark.parametrize(
    "head",
    [
        "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nok",  # a digit to str.isdigit, not to int()
        "HTTP/1.1 \u00b200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: " + "9" * 5000 + "\r\n\r\nok",  # past int()'s digit limit
    ],
)
async def test_a_number_that_is_not_ascii_digits_is_a_transport_error(transport, bare, head) -> None:
    bare.answer = lambda n, line: head.encode("latin-1")
    with pytest.raises(TransportError):
        await transport.send(get(bare.url + "/a"))


@pytest.mark.parametrize("size", [b"-2", b"+2", b"0x2", b"0_2", b""])
async def test_a_chunk_size_that_is_not_plain_hex_is_malformed(transport, bare, size) -> None:
    # int(size, 16) reads all of these; "-2" made the reader hand out the bytes of the next chunk lines.
    bare.answer = lambda n, line: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nok\r\n0\r\n\r\n"
    with pytest.raises(TransportError, match="malformed"):
        await transport.send(get(bare.url + "/a"))


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..example"])
async def test_a_host_name_no_resolver_takes_is_unfetchable(transport, host) -> None:
    # The resolver encodes the name as IDNA and raised UnicodeError (a label over 63 or empty).
    with pytest.raises(Unfetchable):
        await transport.send(get(f"http://{host}/image.png"))


async def test_an_answer_framed_both_chunked_and_by_length_is_read_chunked_and_not_reused(transport, bare) -> None:
    # RFC 9112 6.3: Transfer-Encoding wins, but the framing is in doubt (a sign of response
    # splitting): whatever the server meant to follow must not be read as the next answer.
    bare.answer = lambda n, line: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    assert (await transport.send(get(bare.url + "/a"))).content == b"ok"
    assert (await transport.send(get(bare.url + "/b"))).content == b"ok"
    assert [s.conn for s in bare.seen] == [1, 2]


async def test_a_folded_header_line_is_joined_to_its_field(transport, bare) -> None:
    # obs-fold (RFC 9112 5.2): a client replaces it with a space, as aiohttp does; it is no error.
    bare.answer = lambda n, line: b"HTTP/1.1 200 OK\r\nX-Note: one\r\n \t two\r\nContent-Length: 2\r\n\r\nok"
    got = await transport.send(get(bare.url + "/a"))
    assert (got.content, got.headers["X-Note"]) == (b"ok", "one two")


async def test_a_folded_line_with_no_field_before_it_is_malformed(transport, bare) -> None:
    bare.answer = lambda n, line: b"HTTP/1.1 200 OK\r\n X-Note: one\r\nContent-Length: 2\r\n\r\nok"
    with pytest.raises(TransportError, match="malformed"):
        await transport.send(get(bare.url + "/a"))


async def test_a_body_left_half_read_never_reaches_the_next_request(transport, bare) -> None:
    # A download that stops early, and a read cancelled mid-body: the rest of each body is still
    # on its connection, which must be closed, not pooled to pass for the next answer.
    bare.answer = lambda n, line: (
        b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300000 if line.startswith("GET /big") else OK
    )
    async with transport.stream(get(bare.url + "/big")) as resp:
        async for _ in resp.content.iter_chunked(1024):
            break
    assert (await transport.send(get(bare.url + "/a"))).content == b"ok"
    bare.answer = lambda n, line: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" if line.startswith("GET /cut") else OK
    reading = asyncio.create_task(transport.send(get(bare.url + "/cut")))
    await asyncio.sleep(0.1)  # the head and 3 of the 10 bytes are in; the rest never comes
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert (await transport.send(get(bare.url + "/b"))).content == b"ok"
    assert [(s.conn, s.line.split()[1]) for s in bare.seen] == [(1, "/big"), (2, "/a"), (2, "/cut"), (3, "/b")]


# ---- the pool ----------------------------------------------------------------------------------


async def test_a_waiter_that_lost_its_slot_to_a_newcomer_keeps_its_place(bare) -> None:
    # One connection. /b waits first, /c second. When /a1 ends, /b is woken, but the task of /a1
    # takes the connection back at once for /a2; /b must still come before /c (as in aiohttp),
    # not go to the back of the queue, where a busy pool would keep it until its timeout.
    bare.delay = 0.05
    t = Http11Transport(connections=1)
    await t.open()

    async def a() -> None:
        await t.send(get(bare.url + "/a1"))
        await t.send(get(bare.url + "/a2"))

    try:
        await asyncio.gather(a(), t.send(get(bare.url + "/b")), t.send(get(bare.url + "/c")))
    finally:
        await t.aclose()
    assert [s.line.split()[1] for s in bare.seen] == ["/a1", "/a2", "/b", "/c"]


async def test_a_request_waiting_for_a_slot_when_the_transport_closes_is_never_sent(bare) -> None:
    # Closed with /a in flight and a submit waiting: when /a ends, the submit must not open a
    # connection of its own and go out after the close; it surely never left (sent=False).
    bare.delay = 0.1
    t = Http11Transport(connections=1)
    await t.open()
    first = asyncio.create_task(t.send(get(bare.url + "/a")))
    waiting = asyncio.create_task(t.send(post(bare.url + "/submit")))
    await asyncio.sleep(0.02)
    await t.aclose()
    with pytest.raises(ConnectFailed) as caught:
        await waiting
    assert caught.value.sent is False
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert [s.line for s in bare.seen] == ["GET /a HTTP/1.1"]



async def test_a_header_over_the_limit_is_refused_even_when_it_arrives_whole(transport, bare) -> None:
    # Found whole in one read, the head's end is there at once: the limit holds all the same.
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(80))
    bare.answer = lambda n, line: head + b"Content-Length: 2\r\n\r\nok"
    with pytest.raises(TransportError, match="header is too large"):
        await transport.send(get(bare.url + "/a"))
