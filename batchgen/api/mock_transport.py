"""A transport that answers from a Python function: the client and the engine without sockets.

The handler gets each ``Request`` and returns a ``Response`` (or raises a ``TransportError`` to play
a timeout or a refused connection); it may be a coroutine function. The body cap is enforced as the
aiohttp transport does, so the client classifies a flood the same way. Redirects are not followed:
the handler answers with the final response (redirect chains are tested on a real socket).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from batchgen.api.transport import BodyTooLarge, Request, Response

__all__ = ["Handler", "MockTransport"]

Handler = Callable[[Request], Response | Awaitable[Response]]


def _declared_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Chunks:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), n):
            yield self._data[i : i + n]


class _Streamed:
    """A ``Response`` read the way a download reads one: length first, then the body in chunks."""

    def __init__(self, response: Response) -> None:
        self.status = response.status
        self.headers = response.headers
        declared = _declared_length(response.headers)
        self.content_length = declared if declared is not None else len(response.content)
        self.content = _Chunks(response.content)
        self._body = response.content

    async def read(self) -> bytes:
        return self._body


class MockTransport:
    """``requests`` keeps every request in order, for assertions on what the client sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.is_open = False

    def __repr__(self) -> str:
        return f"MockTransport({len(self.requests)} requests)"

    async def open(self) -> None:
        self.is_open = True

    async def aclose(self) -> None:
        self.is_open = False

    async def _answer(self, request: Request) -> Response:
        self.requests.append(request)
        got = self.handler(request)
        if inspect.isawaitable(got):
            got = await got
        return got

    async def send(self, request: Request) -> Response:
        response = await self._answer(request)
        cap = request.max_body
        if cap is not None:
            declared = _declared_length(response.headers)
            if declared is not None and declared > cap:
                raise BodyTooLarge(response.status, declared)
            if len(response.content) > cap:
                raise BodyTooLarge(response.status, None)
        return response

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[_Streamed]:
        yield _Streamed(await self._answer(request))
