"""The default transport: one aiohttp session for a whole run, with a connection limit.

TLS verification stays on (aiohttp's default) and no cookies are kept. A ``send`` that got no answer
raises a ``TransportError``, so the client's classification names no aiohttp class; ``stream``
still lets aiohttp's errors through, because the download stage tells them apart today.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from batchgen.api.transport import BodyTooLarge, ConnectFailed, Request, Response, TimedOut, TransportError

__all__ = ["AiohttpTransport"]


def _timeout(request: Request) -> aiohttp.ClientTimeout:
    t = request.timeout
    return aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_read=t.read)


class AiohttpTransport:
    def __init__(self, *, connections: int = 64) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
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

    def _open(self, request: Request) -> Any:  # aiohttp's request context manager
        follow = request.max_redirects > 0
        return self.session.request(
            request.method,
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=_timeout(request),
            allow_redirects=follow,
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
        except TimeoutError:
            raise TimedOut() from None
        except aiohttp.ClientConnectorError as e:
            raise ConnectFailed(e.os_error.strerror or str(e)) from None
        except aiohttp.ClientError as e:
            raise TransportError(type(e).__name__) from None

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[aiohttp.ClientResponse]:
        async with self._open(request) as resp:
            yield resp
