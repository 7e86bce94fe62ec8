"""The default transport, made when the first request goes out.

Why: a transport's import and setup cost a command that ends up sending nothing (a finished run
resumed) for nothing; aiohttp's import alone took 0.15-0.2 s. The client opens this one at once;
the real transport is imported, and opened, only when something is sent. It is ``Http11Transport``
unless the environment says ``BATCHGEN_HTTP=aiohttp`` (the earlier default, kept as a fallback).
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from batchgen.api.transport import Request, Response, StreamResponse
from batchgen.core.errors import UserError

if TYPE_CHECKING:
    from batchgen.api.aiohttp_transport import AiohttpTransport
    from batchgen.api.http11 import Http11Transport

__all__ = ["DeferredTransport", "HTTP_ENV"]

HTTP_ENV = "BATCHGEN_HTTP"  # "aiohttp" selects AiohttpTransport; unset (or "http11") the default


class DeferredTransport:
    def __init__(self, *, connections: int = 64) -> None:
        self._connections = connections
        self._choice = os.environ.get(HTTP_ENV, "").strip().lower()
        if self._choice not in ("", "http11", "aiohttp"):  # refused before anything is sent
            raise UserError(f"{HTTP_ENV}={self._choice[:20]!r}: expected 'http11' (the default) or 'aiohttp'")
        self._real: Http11Transport | AiohttpTransport | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"DeferredTransport(started={self._real is not None})"

    @property
    def started(self) -> bool:
        """Whether the real transport was made (and not yet closed)."""
        return self._real is not None and not self._closed

    def real(self) -> Http11Transport | AiohttpTransport:
        """The real transport, made and opened now if it was not yet (no await: none can race)."""
        if self._real is None:
            if self._closed:
                raise RuntimeError("Client is not open")  # as the real transports say once closed
            if self._choice == "aiohttp":
                from batchgen.api.aiohttp_transport import AiohttpTransport

                real: Http11Transport | AiohttpTransport = AiohttpTransport(connections=self._connections)
            else:
                from batchgen.api.http11 import Http11Transport

                real = Http11Transport(connections=self._connections)
            real.start()
            self._real = real
        return self._real

    async def open(self) -> None:
        """Nothing yet (see the module's docstring); a transport closed before is open again."""
        if self._closed:
            self._real, self._closed = None, False

    async def aclose(self) -> None:
        self._closed = True  # no request after this may open a session nobody would close
        if self._real is not None:
            await self._real.aclose()

    async def send(self, request: Request) -> Response:
        return await self.real().send(request)

    def stream(self, request: Request) -> AbstractAsyncContextManager[StreamResponse]:
        return self.real().stream(request)
