"""The default transport, made when the first request goes out.

Why: aiohttp is the largest import of a command (0.15-0.2 s), and a finished run resumed, like
every command that ends up sending nothing, would pay it for nothing. The client opens this one at
once; aiohttp is imported, and its session opened, only when something is sent.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from batchgen.api.transport import Request, Response, StreamResponse

if TYPE_CHECKING:
    from batchgen.api.aiohttp_transport import AiohttpTransport

__all__ = ["DeferredTransport"]


class DeferredTransport:
    def __init__(self, *, connections: int = 64) -> None:
        self._connections = connections
        self._real: AiohttpTransport | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"DeferredTransport(started={self._real is not None})"

    @property
    def started(self) -> bool:
        """Whether the aiohttp session was made (and not yet closed)."""
        return self._real is not None and not self._closed

    def real(self) -> AiohttpTransport:
        """The aiohttp transport, made and opened now if it was not yet (no await: none can race)."""
        if self._real is None:
            if self._closed:
                raise RuntimeError("Client is not open")  # as the aiohttp transport says once closed
            from batchgen.api.aiohttp_transport import AiohttpTransport

            real = AiohttpTransport(connections=self._connections)
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
