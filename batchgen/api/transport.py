"""The seam under the client: a transport moves one request and its answer, nothing more.

httpx's split is the model: the ``Client`` builds requests (URL from its own base, the key header
only there) and turns answers into outcomes; a transport sends bytes and returns bytes. The
default is ``AiohttpTransport``; ``MockTransport`` answers from a Python function so everything
above it (the client's classification, the engine's stages) is tested without sockets.

A transport enforces the limits the request carries (timeouts, the body cap, how many redirects
to follow) and reports a request that got no answer as a ``TransportError``; anything that did
answer, whatever its status, is a ``Response``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from batchgen.core import fastjson

__all__ = [
    "BodyTooLarge",
    "ByteStream",
    "ConnectFailed",
    "Request",
    "RequestTimeout",
    "Response",
    "StreamResponse",
    "TimedOut",
    "Transport",
    "TransportError",
]


@dataclass(frozen=True)
class RequestTimeout:
    """Seconds: the whole exchange, establishing the connection, and any silence while reading."""

    total: float
    connect: float
    read: float


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: str | None = None  # JSON text, sent as UTF-8; None sends no body
    timeout: RequestTimeout = field(default_factory=lambda: RequestTimeout(60.0, 10.0, 30.0))
    max_body: int | None = None  # refuse an answer longer than this (BodyTooLarge) rather than read it all
    max_redirects: int = 0  # 0: a 3xx is an answer like any other (API calls); n: follow up to n hops

    def json(self) -> Any:
        """The body as a value (for handlers and assertions); None without a body."""
        return None if self.body is None else fastjson.loads(self.body)


def _headers(values: Mapping[str, str] | None) -> CIMultiDictProxy[str]:
    # HTTP header names are case-insensitive; readers (reset_delay) look them up by any spelling.
    return CIMultiDictProxy(CIMultiDict(values or {}))


@dataclass(frozen=True)
class Response:
    """A whole answer: the status, headers (looked up case-insensitively) and the body bytes."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _headers(self.headers))

    @classmethod
    def with_json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, fastjson.dumps(value).encode())


class ByteStream(Protocol):
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class StreamResponse(Protocol):
    """An answer whose body is read as it arrives (image downloads); aiohttp's response is one."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> ByteStream: ...

    async def read(self) -> bytes: ...


class Transport(Protocol):
    """What the client needs from the network. ``open`` and ``aclose`` bracket a whole run."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def send(self, request: Request) -> Response:
        """The whole answer, read up to ``request.max_body``; raises ``TransportError`` when none came."""
        ...

    def stream(self, request: Request) -> AbstractAsyncContextManager[StreamResponse]:
        """The answer with its body still to read. The aiohttp transport lets aiohttp's own errors
        through here: the download stage classifies them (too many redirects, a truncated body)."""
        ...


class TransportError(Exception):
    """The request got no usable answer. ``sent`` is False only when it surely never left
    (connection refused): such a submit cannot have been billed."""

    sent = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectFailed(TransportError):
    """No connection could be made; nothing was sent."""

    sent = False


class TimedOut(TransportError):
    """No (complete) answer within the request's timeout; the request may have arrived."""

    def __init__(self, reason: str = "no answer within the timeout") -> None:
        super().__init__(reason)


class BodyTooLarge(TransportError):
    """The answer is longer than ``max_body``: announced (``declared``) or found while reading."""

    def __init__(self, status: int, declared: int | None) -> None:
        super().__init__(f"HTTP {status}: answer too large")
        self.status = status
        self.declared = declared
