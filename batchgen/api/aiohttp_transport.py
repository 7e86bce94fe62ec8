"""The transport on aiohttp (``BATCHGEN_HTTP=aiohttp``): one session for a whole run, with a connection limit.

TLS verification stays on (aiohttp's default) and no cookies are kept. Whatever goes wrong becomes
a ``TransportError``, so nothing above this module names an aiohttp class. A streamed body is
decoded by ``DecodedStream``, not by aiohttp: aiohttp would inflate a whole network read at once and leave the
encoded Content-Length beside the decoded bytes (every gzip-served image looked truncated).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp

from batchgen.api.transport import (
    ACCEPT_ENCODING,
    BodyIncomplete,
    BodyTooLarge,
    ConnectFailed,
    DecodedStream,
    Request,
    RequestTimeout,
    Response,
    TimedOut,
    TransportError,
    Unfetchable,
)

__all__ = ["AiohttpTransport"]


_TIMEOUTS: dict[RequestTimeout, aiohttp.ClientTimeout] = {}


def _timeout(request: Request) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for ``request``: built once per distinct timeout, not once per request."""
    t = request.timeout
    got = _TIMEOUTS.get(t)
    if got is None:
        if len(_TIMEOUTS) > 64:  # a handful exist in a run; never let odd callers grow it unbounded
            _TIMEOUTS.clear()
        got = _TIMEOUTS[t] = aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_read=t.read)
    return got


class AiohttpTransport:
    def __init__(self, *, connections: int = 64) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.start()

    def start(self) -> None:
        """``open`` without an await (it has none to make): for a transport made on first use."""
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Client is not open")
        return self._session

    def _open(self, request: Request, *, decode: bool = True, headers: Mapping[str, str] | None = None) -> Any:
        """aiohttp's request context manager; ``decode=False`` leaves the body's encoding to us."""
        follow = request.max_redirects > 0
        return self.session.request(
            request.method,
            request.url,
            data=request.body,
            headers={**request.headers, **headers} if headers else request.headers,
            timeout=_timeout(request),
            allow_redirects=follow,
            auto_decompress=decode,
            **({"max_redirects": request.max_redirects} if follow else {}),
        )

    async def send(self, request: Request) -> Response:
        try:
            async with self._open(request) as resp:
                cap = request.max_body
                if cap is None:
                    return Response(resp.status, resp.headers, await resp.read())
                length = resp.content_length
                if length is not None and length > cap:
                    raise BodyTooLarge(resp.status, length)
                if length is not None and not resp.headers.get("Content-Encoding"):
                    # Announced and within the cap, sent as is: aiohttp stops reading at that length.
                    return Response(resp.status, resp.headers, await resp.read())
                # read(n) returns what has arrived so far, not n bytes: gather until EOF or the cap.
                buf = bytearray()
                while len(buf) <= cap:
                    part = await resp.content.read(cap + 1 - len(buf))
                    if not part:
                        break
                    buf += part
                if len(buf) > cap:
                    raise BodyTooLarge(resp.status, None)
                return Response(resp.status, resp.headers, bytes(buf))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _transport_error(e) from None

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[DecodedStream]:
        async with AsyncExitStack() as stack:
            try:
                resp = await stack.enter_async_context(
                    self._open(request, decode=False, headers={"Accept-Encoding": ACCEPT_ENCODING})
                )
            except (TimeoutError, aiohttp.ClientError) as e:
                raise _transport_error(e) from None
            yield DecodedStream(resp.status, resp.headers, resp.content_length, _reader(resp))


# Named in aiohttp 3.10 and 3.9.4; older releases raise plainer errors for the same cases.
_CONNECT_TIMEOUT: Any = getattr(aiohttp, "ConnectionTimeoutError", ())
_NON_HTTP_REDIRECT: Any = getattr(aiohttp, "NonHttpUrlRedirectClientError", ())


def _transport_error(e: BaseException) -> TransportError:
    """aiohttp's error (or a timeout) as the transport error that says what it means for a retry."""
    if isinstance(e, _CONNECT_TIMEOUT):
        # No connection within the connect timeout (or no free one in the pool): nothing was sent.
        return ConnectFailed("no connection within the timeout")
    if isinstance(e, TimeoutError):
        return TimedOut()
    if isinstance(e, aiohttp.ClientConnectorError):  # refused, DNS, TLS
        os_error = e.os_error
        if isinstance(os_error, ConnectionError) and os_error.errno:
            # asyncio words a refusal "Connect call failed ('1.2.3.4', 443)": say what happened instead.
            return ConnectFailed(os.strerror(os_error.errno))
        return ConnectFailed(os_error.strerror or str(e))
    if isinstance(e, aiohttp.TooManyRedirects):
        return Unfetchable("too many redirects")
    if isinstance(e, _NON_HTTP_REDIRECT):
        scheme = str(e.args[0]).split(":", 1)[0][:20] if e.args else "?"
        return Unfetchable(f"redirect to a {scheme}: URL refused")
    if isinstance(e, aiohttp.InvalidURL):
        return Unfetchable("invalid URL")
    if isinstance(e, aiohttp.ClientPayloadError):
        return BodyIncomplete("the connection closed mid-body")
    return TransportError(type(e).__name__)


def _reader(resp: aiohttp.ClientResponse) -> Any:
    """``read_raw`` for ``DecodedStream``: aiohttp's body as sent, its errors as transport errors."""

    async def read_raw(n: int) -> bytes:
        try:
            return await resp.content.read(n)
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _transport_error(e) from None

    return read_raw
