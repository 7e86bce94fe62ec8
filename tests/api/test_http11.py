"""The HTTP/1.1 transport's own connection handling, against a bare server each test scripts.

What the shared transport tests cannot show: which connection carried which request. A kept-alive
connection is reused, one the server closed or asked to close is not, a GET that met a connection
closed under it is sent once more while a POST (a paid submit) never is, the pool keeps its limit,
TLS verifies against the trust store, and a redirect to another origin carries no credential.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import trustme

from batchgen.api.http11 import Http11Transport
from batchgen.api.transport import ConnectFailed, Request, RequestTimeout, TimedOut, TransportError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TIMEOUT = RequestTimeout(total=5.0, connect=2.0, read=2.0)


@dataclass
class Seen:
    conn: int  # which connection (1, 2, ...) carried it
    line: str  # the request line
    headers: dict[str, str]


@dataclass
class Bare:
    """Answers each request with ``answer(n-th on its connection, request line)``: bytes to send,
    or None to close the connection without answering."""

    answer: Callable[[int, str], bytes | None] = lambda n, line: OK
    close_after_answer: bool = False
    delay: float = 0.0
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    conns: int = 0
    active: int = 0
    most_active: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        conn, n = self.conns, 0
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                line, *rest = head[:-4].split("\r\n")
                headers = dict(h.split(": ", 1) for h in rest)
                await reader.readexactly(int(headers.get("Content-Length", "0")))
                self.seen.append(Seen(conn, line, headers))
                n += 1
                await asyncio.sleep(self.delay)
                out = self.answer(n, line)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.active -= 1
            writer.close()


async def serve(bare: Bare, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    server = await asyncio.start_server(bare.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    bare.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    return server


def get(url: str, headers: dict[str, str] | None = None, redirects: int = 0) -> Request:
    return Request("GET", url, headers or {}, timeout=TIMEOUT, max_redirects=redirects)


def post(url: str) -> Request:
    return Request("POST", url, {"Content-Type": "application/json"}, '{"prompt": "x"}', timeout=TIMEOUT)


async def test_a_kept_alive_connection_carries_the_next_requests(transport, bare) -> None:
    for request in (get(bare.url + "/a"), post(bare.url + "/b"), get(bare.url + "/c")):
        assert (await transport.send(request)).content == b"ok"
    assert [(s.conn, s.line) for s in bare.seen] == [
        (1, "GET /a HTTP/1.1"), (1, "POST /b HTTP/1.1"), (1, "GET /c HTTP/1.1")
    ]


async def test_an_answer_saying_connection_close_is_not_reused(transport, bare) -> None:
    bare.answer = lambda n, line: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    await transport.send(get(bare.url + "/a"))
    await transport.send(get(bare.url + "/b"))
    assert [s.conn for s in bare.seen] == [1, 2]


async def test_a_connection_the_server_closed_while_idle_is_not_used(transport, bare) -> None:
    bare.close_after_answer = True  # as a server whose keep-alive timeout passed
    await transport.send(get(bare.url + "/a"))
    await asyncio.sleep(0.05)
    assert (await transport.send(get(bare.url + "/b"))).content == b"ok"
    await asyncio.sleep(0.05)
    assert (await transport.send(post(bare.url + "/submit"))).content == b"ok"
    assert [(s.conn, s.line) for s in bare.seen] == [
        (1, "GET /a HTTP/1.1"), (2, "GET /b HTTP/1.1"), (3, "POST /submit HTTP/1.1")
    ]


async def test_a_get_that_met_a_stale_connection_is_sent_once_more_on_a_new_one(transport, bare) -> None:
    # The server closes the kept-alive connection as the second request arrives (a keep-alive
    # timeout racing the request): nothing was answered, so a GET may safely go again.
    bare.answer = lambda n, line: OK if n == 1 else None
    await transport.send(get(bare.url + "/a"))
    assert (await transport.send(get(bare.url + "/b"))).content == b"ok"
    assert [(s.conn, s.line) for s in bare.seen] == [
        (1, "GET /a HTTP/1.1"), (1, "GET /b HTTP/1.1"), (2, "GET /b HTTP/1.1")
    ]


async def test_a_post_that_met_a_stale_connection_is_never_sent_twice(transport, bare) -> None:
    bare.answer = lambda n, line: OK if n == 1 else None
    await transport.send(get(bare.url + "/a"))
    with pytest.raises(TransportError) as caught:
        await transport.send(post(bare.url + "/submit"))
    assert caught.value.sent is True  # it reached the server: it may have been billed
    assert [s.line for s in bare.seen].count("POST /submit HTTP/1.1") == 1


async def test_a_body_read_until_the_server_closes(transport, bare) -> None:
    bare.answer = lambda n, line: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    bare.close_after_answer = True
    assert (await transport.send(get(bare.url + "/a"))).content == b"until the end"
    await transport.send(get(bare.url + "/b"))
    assert [s.conn for s in bare.seen] == [1, 2]


async def test_a_chunked_body_with_extensions_and_trailers_keeps_the_connection(transport, bare) -> None:
    bare.answer = lambda n, line: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert (await transport.send(get(bare.url + "/a"))).content == b"abcde"
    assert (await transport.send(get(bare.url + "/b"))).content == b"abcde"
    assert [s.conn for s in bare.seen] == [1, 1]


async def test_a_body_that_keeps_trickling_ends_at_the_total_timeout(transport) -> None:
    # Never silent for long enough to trip the read timeout, yet the whole exchange has a bound.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.02)
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = Request("GET", f"http://127.0.0.1:{port}/slow", {}, timeout=RequestTimeout(total=0.3, connect=1.0, read=1.0))
    try:
        with pytest.raises(TimedOut):
            await transport.send(request)
    finally:
        server.close()


async def test_the_pool_never_opens_more_connections_than_its_limit(bare) -> None:
    bare.delay = 0.05
    t = Http11Transport(connections=2)
    await t.open()
    try:
        answers = await asyncio.gather(*(t.send(get(f"{bare.url}/{i}")) for i in range(6)))
    finally:
        await t.aclose()
    assert [a.status for a in answers] == [200] * 6
    assert bare.most_active <= 2 and bare.conns == 2


async def test_a_redirect_to_another_origin_carries_no_credential(transport, bare) -> None:
    port = bare.url.rsplit(":", 1)[1]

    def answer(n: int, line: str) -> bytes:
        if line.startswith("GET /start "):  # same origin, relative
            return b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"
        if line.startswith("GET /next "):  # another origin: localhost is not 127.0.0.1
            return f"HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/final\r\nContent-Length: 0\r\n\r\n".encode()
        return OK

    bare.answer = answer
    headers = {"x-api-key": "secret", "Authorization": "Bearer secret", "User-Agent": "test"}
    got = await transport.send(get(bare.url + "/start", headers, redirects=5))
    assert got.content == b"ok"
    keys = [(s.line.split()[1], s.headers.get("x-api-key"), s.headers.get("Authorization")) for s in bare.seen]
    assert keys == [("/start", "secret", "Bearer secret"), ("/next", "secret", "Bearer secret"), ("/final", None, None)]
    assert bare.seen[-1].headers["User-Agent"] == "test" and bare.seen[-1].headers["Host"] == f"localhost:{port}"


# ---- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_server(ca: trustme.CA, *names: str) -> tuple[Bare, asyncio.Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    bare = Bare()
    return bare, await serve(bare, context)


async def test_tls_to_a_server_the_trust_store_vouches_for(transport, ca) -> None:
    bare, server = await tls_server(ca, "127.0.0.1", "localhost")
    try:
        assert transport.ssl_context.verify_mode == ssl.CERT_REQUIRED and transport.ssl_context.check_hostname
        ca.configure_trust(transport.ssl_context)
        for path in ("/a", "/b"):
            assert (await transport.send(get(bare.url + path))).content == b"ok"
    finally:
        server.close()
    assert [s.conn for s in bare.seen] == [1, 1]


async def test_tls_with_an_untrusted_certificate_is_refused_before_sending(transport, ca) -> None:
    bare, server = await tls_server(ca, "127.0.0.1")
    try:
        with pytest.raises(ConnectFailed, match="certificate verify failed"):
            await transport.send(post(bare.url + "/submit"))  # the test CA is not trusted here
    finally:
        server.close()
    assert bare.seen == []


async def test_tls_with_a_certificate_for_another_host_is_refused(transport, ca) -> None:
    bare, server = await tls_server(ca, "api.example.org")
    try:
        ca.configure_trust(transport.ssl_context)
        with pytest.raises(ConnectFailed):
            await transport.send(get(bare.url + "/a"))
    finally:
        server.close()
    assert bare.seen == []
