"""The seam under the client: a transport moves one request and its answer, nothing more.

httpx's split is the model: the ``Client`` builds requests (URL from its own base, the key header
only there) and turns answers into outcomes; a transport sends bytes and returns bytes. The
default is ``Http11Transport`` (``AiohttpTransport`` on request); ``MockTransport`` answers from a
Python function so everything above it (the client's classification, the engine's stages) is
tested without sockets.

A transport enforces the limits the request carries (timeouts, the body cap, how many redirects
to follow) and reports a request that got no answer as a ``TransportError``; anything that did
answer, whatever its status, is a ``Response``. A streamed body (an image download) arrives decoded:
``Decoder`` undoes its Content-Encoding a bounded piece at a time, and a body that cannot be read
whole is a ``TransportError`` too (``BodyIncomplete``, ``BadEncoding``, ``Unfetchable``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from batchgen.core import fastjson

__all__ = [
    "ACCEPT_ENCODING",
    "BadEncoding",
    "BodyIncomplete",
    "BodyTooLarge",
    "ByteStream",
    "ConnectFailed",
    "DECODABLE",
    "DecodedStream",
    "Decoder",
    "Request",
    "RequestTimeout",
    "Response",
    "StreamResponse",
    "TimedOut",
    "Transport",
    "TransportError",
    "Unfetchable",
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
    if isinstance(values, CIMultiDictProxy):  # a transport's own: already that, read-only
        return values
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
    """An answer whose body is read as it arrives (image downloads)."""

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
        """The answer with its body still to read, decoded from its Content-Encoding. Failing to
        open it or to read it whole raises a ``TransportError`` (``Unfetchable``, ``BodyIncomplete``,
        ``BadEncoding``, ``TimedOut``, ``ConnectFailed``); the download stage decides what each means."""
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


class Unfetchable(TransportError):
    """The URL, or a redirect from it, is one no transport fetches: invalid, a scheme other than
    http(s) (``file://``), or too many hops. Asking again meets the same refusal."""


class BodyIncomplete(TransportError):
    """The body stopped before it was whole: the connection closed mid-body, or a compressed stream
    ended before its end marker. Fetching again may well get it all."""


class BadEncoding(TransportError):
    """The body's Content-Encoding is one we cannot undo, or its compressed bytes are corrupt: the
    same bytes would come again."""


# What a streamed request asks for: exactly the encodings ``Decoder`` undoes (never br or zstd).
ACCEPT_ENCODING = "gzip, deflate"
DECODABLE = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})  # Content-Encoding values ``Decoder`` takes


class Decoder:
    """Undoes a body's Content-Encoding (gzip or deflate) a bounded piece at a time.

    A few kilobytes can inflate to gigabytes (a decompression bomb): no piece handed out is longer
    than the reader asked for, so the reader's own size cap stops a bomb after one piece over it,
    with nothing large ever held in memory. An identity body passes through as it came.
    """

    def __init__(self, content_encoding: str | None) -> None:
        encoding = (content_encoding or "").strip().lower()
        if encoding not in DECODABLE:
            raise BadEncoding(f"Content-Encoding {encoding[:40]!r} cannot be decoded")
        self.encoding = "" if encoding == "identity" else encoding
        self._z: zlib._Decompress | None = None
        self._done = False  # the compressed stream reached its end marker

    @property
    def identity(self) -> bool:
        return not self.encoding

    def _start(self, first: bytes) -> zlib._Decompress:
        if self.encoding != "deflate":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
        # "deflate" should be zlib-wrapped, but servers send raw deflate too (RFC 1950: CM = 8).
        return zlib.decompressobj(zlib.MAX_WBITS if first[:1] and first[0] & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes, n: int) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most ``n`` bytes."""
        if self.identity:
            for i in range(0, len(data), n):
                yield data[i : i + n]
            return
        full = False  # the last piece filled ``n``: zlib may hold more output without more input
        while data or full:
            if self._z is None:
                self._z = self._start(data)
            try:
                out = self._z.decompress(data, n)
            except zlib.error:
                raise BadEncoding(f"the {self.encoding} body is corrupt") from None
            data = self._z.unconsumed_tail
            full = len(out) == n and not self._z.eof
            if out:
                yield out
            if self._z.eof:
                self._done = True
                # gzip allows several members one after another; anything else after the end is junk.
                data = self._z.unused_data
                self._z = None
                if data and self.encoding == "deflate":
                    raise BadEncoding("data after the end of the deflate body")

    def finish(self) -> None:
        """At the end of the body: a compressed stream must have reached its end marker."""
        if not self.identity and (self._z is not None or not self._done):
            raise BodyIncomplete(f"the {self.encoding} body ended before its end")


class DecodedStream:
    """An answer as a download reads it (a ``StreamResponse``), whatever transport carried it:
    decoded in bounded pieces from ``read_raw(n)`` (up to ``n`` bytes as sent, b"" at the end,
    failures already ``TransportError``).

    ``content_length`` is the body's length only when it is sent as is: for an encoded body the
    header counts the encoded bytes, and the decoded length is known only at the end.
    """

    def __init__(
        self, status: int, headers: Mapping[str, str], length: int | None, read_raw: Callable[[int], Awaitable[bytes]]
    ) -> None:
        self.status = status
        self.headers = headers
        self._encoding = headers.get("Content-Encoding")
        identity = (self._encoding or "").strip().lower() in ("", "identity")
        self.content_length = length if identity else None
        self.content = self
        self._read_raw = read_raw

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        decoder = Decoder(self._encoding)  # an encoding we cannot undo is refused before reading
        while raw := await self._read_raw(n):
            for piece in decoder.feed(raw, n):
                yield piece
        decoder.finish()

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_chunked(64 * 1024)])
