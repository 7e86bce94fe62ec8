"""The default transport: HTTP/1.1 on asyncio, kept-alive connections pooled per origin.

Why not aiohttp: an image takes four requests, and aiohttp spent about a third of the worker's CPU
on them. This moves the same requests with the semantics of ``AiohttpTransport`` (which stays
selectable: ``BATCHGEN_HTTP=aiohttp``): at most ``connections`` at once, TLS verified with the
system's trust store, bodies capped and decoded, redirects followed only when the request allows.

A POST is never sent twice here. A GET that met a kept-alive connection the server had already
closed (nothing of an answer arrived) is sent once more on a new connection: it cannot have cost
anything, and the next poll would ask the same.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDictProxy

from batchgen.api.http11_conn import Connection, NoAnswer
from batchgen.api.http11_request import Target, request_head, target_of
from batchgen.api.transport import (
    ACCEPT_ENCODING,
    DECODABLE,
    BodyTooLarge,
    ConnectFailed,
    DecodedStream,
    Decoder,
    Request,
    Response,
    TransportError,
    Unfetchable,
)

__all__ = ["Http11Transport"]

IDLE_TIMEOUT = 15.0  # a kept-alive connection unused this long is closed, not trusted (aiohttp's default)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CREDENTIALS = frozenset({"x-api-key", "authorization", "cookie", "proxy-authorization"})


class Http11Transport:
    def __init__(self, *, connections: int = 64) -> None:
        # Like aiohttp's limit: connections lent out at once; idle kept-alive ones are not counted.
        self._limit = connections
        self._busy = 0  # connections lent out or being made
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._open = False

    def __repr__(self) -> str:
        return f"Http11Transport(connections={self._limit}, open={self._open})"

    async def open(self) -> None:
        self.start()

    def start(self) -> None:
        """``open`` without an await (it has none to make): for a transport made on first use."""
        self._open = True

    async def aclose(self) -> None:
        self._open = False
        while self._waiters:  # a request still waiting for a slot is refused, never sent after this
            _refuse(self._waiters.popleft(), "the transport is closed")
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the closed transports say goodbye before the loop may end

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context of every https connection: the system's trust store, hostnames checked.
        Made on first use (loading the trust store takes milliseconds a plain-http run never pays)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    # ---- the pool ----------------------------------------------------------------------------

    async def _acquire(self, target: Target, connect_by: float, *, fresh: bool) -> tuple[Connection, bool]:
        """A connection to ``target``'s origin and whether it was used before; ``ConnectFailed``
        when none is free or made by ``connect_by`` (nothing was sent then)."""
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            if not self._open:
                raise ConnectFailed("the transport is closed")
            idle = None if fresh else self._idle.get(target.origin)
            now = loop.time()
            while idle:
                conn = idle.pop()
                if conn.open and now - conn.idle_since < IDLE_TIMEOUT:
                    self._busy += 1
                    return conn, True
                conn.close()
            if self._busy < self._limit:
                break
            await self._wait_for_a_slot(connect_by - now, first=waited)
            waited = True
        self._busy += 1
        try:
            return await self._connect(target, connect_by - loop.time()), False
        except BaseException:
            self._busy -= 1
            self._wake()
            raise

    async def _wait_for_a_slot(self, within: float, *, first: bool) -> None:
        """``first``: woken before, the slot taken by a newcomer: wait at the front, not behind it."""
        if within <= 0:
            raise ConnectFailed("no connection within the timeout")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        timer = loop.call_later(within, _refuse, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake()  # woken, then cancelled: pass the free slot on
            raise
        finally:
            timer.cancel()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, target: Target, conn: Connection) -> None:
        self._busy -= 1
        if self._open and conn.reusable:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(target.origin, []).append(conn)
        else:
            conn.close()
        self._wake()

    async def _connect(self, target: Target, within: float) -> Connection:
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if target.scheme == "https" else None
        try:
            async with asyncio.timeout(max(within, 0.0)):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop),
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
        except TimeoutError:
            raise ConnectFailed("no connection within the timeout") from None
        except OSError as e:  # refused, unreachable, DNS, TLS (a certificate that does not verify)
            if isinstance(e, ConnectionError) and e.errno:
                # asyncio words a refusal "Connect call failed ('1.2.3.4', 443)": say what happened.
                raise ConnectFailed(os.strerror(e.errno)) from None
            raise ConnectFailed(e.strerror or str(e)) from None
        return conn

    # ---- one request -------------------------------------------------------------------------

    async def _exchange(self, request: Request, extra: Mapping[str, str] | None) -> _Answer:
        """The answer's head, after the redirects the request allows; its body is still to read."""
        if not self._open:
            raise RuntimeError("Client is not open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout.total
        method, url = request.method, request.url
        headers: Mapping[str, str] = {**request.headers, **extra} if extra else request.headers
        body = None if request.body is None else request.body.encode()
        target = target_of(url)
        for _hop in range(request.max_redirects + 1):
            head = request_head(method, target, headers, body)
            answer = await self._round_trip(method, target, head, body, request, deadline)
            location = answer.headers.get("Location") if answer.status in REDIRECTS else None
            if request.max_redirects <= 0 or not location:
                return answer
            await answer.discard()
            url = urljoin(url, location)
            scheme = urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                raise Unfetchable(f"redirect to a {scheme[:20] or '?'}: URL refused")
            following = target_of(url)
            if following.origin != target.origin:  # never hand a credential to another origin
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIALS}
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            target = following
        raise Unfetchable("too many redirects")

    async def _round_trip(
        self, method: str, target: Target, head: bytes, body: bytes | None, request: Request, deadline: float
    ) -> _Answer:
        loop = asyncio.get_running_loop()
        timeout = request.timeout
        connect_by = min(loop.time() + timeout.connect, deadline)
        conn, reused = await self._acquire(target, connect_by, fresh=False)
        while True:
            try:
                conn.send(head + body if body else head)
                status, headers = await conn.read_head(method, deadline, timeout.read)
                return _Answer(self, target, conn, status, headers, deadline, timeout.read)
            except NoAnswer as e:
                self._release(target, conn)
                if not (reused and not e.partial and method == "GET"):
                    raise
                # A kept-alive connection the server had closed: nothing was answered; once more, new.
                conn, reused = await self._acquire(target, min(loop.time() + timeout.connect, deadline), fresh=True)
            except BaseException:
                conn.close()
                self._release(target, conn)
                raise

    async def send(self, request: Request) -> Response:
        answer = await self._exchange(request, None)
        try:
            content = await answer.read_all(request.max_body)
        finally:
            answer.release()
        return Response(answer.status, answer.headers, content)

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[DecodedStream]:
        answer = await self._exchange(request, {"Accept-Encoding": ACCEPT_ENCODING})
        try:
            yield DecodedStream(answer.status, answer.headers, answer.length, answer.read)
        finally:
            answer.release()


def _refuse(waiter: asyncio.Future[None], reason: str = "no connection within the timeout") -> None:
    if not waiter.done():
        waiter.set_exception(ConnectFailed(reason))


class _Answer:
    """An answer whose head is read; the body is read from its connection, which goes back to the
    pool on ``release`` if the body was read whole and the server keeps it alive."""

    def __init__(
        self,
        owner: Http11Transport,
        target: Target,
        conn: Connection,
        status: int,
        headers: CIMultiDictProxy[str],
        deadline: float,
        silence: float,
    ) -> None:
        self._owner, self._target, self._conn = owner, target, conn
        self.status, self.headers = status, headers
        self.length = conn.length
        self._deadline, self._silence = deadline, silence
        self._released = False

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body as sent (still encoded); b"" at its end."""
        try:
            return await self._conn.read(n, self._deadline, self._silence)
        except BaseException:
            self._conn.close()
            raise

    async def read_all(self, cap: int | None) -> bytes:
        """The whole body, decoded as aiohttp's ``send`` decodes it, refused past ``cap`` bytes."""
        if cap is not None and self.length is not None and self.length > cap:
            raise BodyTooLarge(self.status, self.length)
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        # An encoding we cannot undo passes through as it came (aiohttp's auto-decompression too).
        decoder = Decoder(encoding) if encoding in DECODABLE and encoding not in ("", "identity") else None
        limit = cap if cap is not None else 1 << 62
        piece = 1 << 20 if self.length is None else max(self.length, 1)
        parts: list[bytes] = []
        size = 0
        while raw := await self.read(piece):
            for part in decoder.feed(raw, 1 << 16) if decoder is not None else (raw,):
                parts.append(part)
                size += len(part)
                if size > limit:
                    self._conn.close()
                    raise BodyTooLarge(self.status, None)
        if decoder is not None:
            decoder.finish()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def discard(self) -> None:
        """Skip a redirect's (short) body so its connection can carry the next request."""
        try:
            read = 0
            while read <= 64 * 1024 and (raw := await self.read(16 * 1024)):
                read += len(raw)
        except TransportError:
            pass  # the connection is closed, not reused; the redirect is followed all the same
        finally:
            self.release()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._release(self._target, self._conn)
