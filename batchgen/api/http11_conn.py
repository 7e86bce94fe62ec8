"""One HTTP/1.1 client connection on an asyncio Protocol: an answer's head and body read from a buffer.

Why by hand: a request through aiohttp cost about 0.08 ms of CPU, four times these few parsing steps,
and an image takes four requests. Only what an HTTP/1.1 client of a JSON API and a file server needs
is here: a status line and headers, bodies framed by Content-Length, chunked or the connection's
end, and whether the connection may carry another request. Waiting is bounded twice: by the
silence allowed between two reads and by the deadline of the whole exchange (``TimedOut``).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Literal

from multidict import CIMultiDict, CIMultiDictProxy

from batchgen.api.transport import BodyIncomplete, TimedOut, TransportError

__all__ = ["Connection", "NoAnswer"]

MAX_HEAD = 64 * 1024  # status line and headers; a longer head is a broken or hostile server
MAX_LINE = 4 * 1024  # a chunk-size line or a trailer line
HIGH_WATER = 256 * 1024  # stop reading the socket while this much waits in the buffer unread
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}").fullmatch  # a chunk size

Framing = Literal["length", "chunked", "close", "none"]


class NoAnswer(TransportError):
    """The connection ended before a whole head came. ``partial``: some of it had arrived, so the
    request surely reached the server; without it a request on a reused connection may have met a
    connection the server had already closed (safe to send again only if idempotent)."""

    def __init__(self, reason: str, *, partial: bool) -> None:
        super().__init__(reason)
        self.partial = partial


class Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._eof = False  # the peer closed its side (or the connection was lost)
        self._lost: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.idle_since = 0.0
        # The answer being read: how its body is framed, what is left of it, whether it is read whole.
        self._framing: Framing = "none"
        self._left = 0
        self._chunk: Literal["size", "data", "crlf", "trailer"] = "size"
        self.done = True
        self.keep_alive = False

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (asyncio's or uvloop's)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close our side too: a half-closed HTTP connection carries nothing more

    def connection_lost(self, exc: BaseException | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- state -----------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Still connected, with nothing unasked for in the buffer: fit to carry a request."""
        t = self.transport
        return not self._eof and t is not None and not t.is_closing() and not self._buf

    @property
    def reusable(self) -> bool:
        """The last answer was read whole and the server did not ask to close."""
        return self.done and self.keep_alive and self.open

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._eof = True

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def _more(self, deadline: float, silence: float) -> None:
        """Wait for more bytes or the end, at most ``silence`` seconds and never past ``deadline``."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        wait = min(silence, deadline - self._loop.time())
        if wait <= 0:
            raise TimedOut()
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(wait, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    # ---- the answer --------------------------------------------------------------------------

    async def read_head(self, method: str, deadline: float, silence: float) -> tuple[int, CIMultiDictProxy[str]]:
        """The status and headers of the next final answer (1xx answers skipped); frames its body."""
        self.done, self.keep_alive, got = False, False, False
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                got = got or bool(self._buf)
                if len(self._buf) > MAX_HEAD:
                    raise TransportError("the answer's header is too large")
                if self._eof:
                    raise NoAnswer(self._end_reason("the server closed the connection without answering"), partial=got)
                await self._more(deadline, silence)
                continue
            if end > MAX_HEAD:  # arrived whole in one read: the same limit
                raise TransportError("the answer's header is too large")
            head = bytes(self._buf[:end]).decode("latin-1")
            del self._buf[: end + 4]
            got = True
            status, version, headers = _parse_head(head)
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue, 103 Early Hints: the answer proper follows
            self._frame(method, status, version, headers)
            return status, headers

    def _end_reason(self, default: str) -> str:
        errno = getattr(self._lost, "errno", None)
        if isinstance(self._lost, OSError) and errno:
            return os.strerror(errno)
        return default

    def _frame(self, method: str, status: int, version: str, headers: CIMultiDictProxy[str]) -> None:
        connection = headers.get("Connection")
        self.keep_alive = version == "HTTP/1.1" and not (
            connection and "close" in [t.strip() for t in ",".join(headers.getall("Connection")).lower().split(",")]
        )
        self._chunk = "size"
        if method == "HEAD" or status in (204, 304):
            self._framing, self.done = "none", True
            return
        if "Transfer-Encoding" in headers:
            coding = ",".join(headers.getall("Transfer-Encoding")).rsplit(",", 1)[-1].strip().lower()
            self._framing = "chunked" if coding == "chunked" else "close"
            if "Content-Length" in headers:  # framed twice: read as chunked, never trusted again
                self.keep_alive = False
        elif (length := headers.get("Content-Length")) is not None:
            lengths = headers.getall("Content-Length")
            if (len(lengths) > 1 and len({v.strip() for v in lengths}) > 1) or not _digits(length.strip(), 18):
                raise TransportError("the answer's Content-Length is invalid")
            self._framing, self._left = "length", int(length)
            self.done = self._left == 0
        else:
            self._framing = "close"
        if self._framing == "close":
            self.keep_alive = False

    @property
    def length(self) -> int | None:
        """The body's length as framed by Content-Length (before any Content-Encoding is undone)."""
        return self._left if self._framing == "length" else None

    async def read(self, n: int, deadline: float, silence: float) -> bytes:
        """Up to ``n`` raw bytes of the body as they arrive; b"" once it is read whole."""
        while not self.done:
            if self._framing == "chunked":
                piece = self._chunked(n)
                if piece is not None:
                    return piece
            elif self._buf:
                k = min(n, len(self._buf), self._left) if self._framing == "length" else min(n, len(self._buf))
                piece = bytes(self._buf[:k])
                del self._buf[:k]
                if self._framing == "length":
                    self._left -= k
                    self.done = self._left == 0
                return piece
            elif self._eof and self._framing == "close" and self._lost is None:
                self.done = True  # read until the server closed: this was the end
                break
            if self._eof:
                raise BodyIncomplete("the connection closed mid-body")
            await self._more(deadline, silence)
        return b""

    def _chunked(self, n: int) -> bytes | None:
        """A piece of chunk data, b"" at the end, None when the buffer holds nothing more to parse."""
        while True:
            if self._chunk == "data":
                if not self._buf:
                    return None
                k = min(n, len(self._buf), self._left)
                piece = bytes(self._buf[:k])
                del self._buf[:k]
                self._left -= k
                if not self._left:
                    self._chunk = "crlf"
                return piece
            if self._chunk == "crlf":
                if len(self._buf) < 2:
                    return None
                if self._buf[:2] != b"\r\n":
                    raise TransportError("the chunked body is malformed")
                del self._buf[:2]
                self._chunk = "size"
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise TransportError("the chunked body is malformed")
                return None
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            if self._chunk == "trailer":
                if not line:
                    self.done = True
                    return b""
                continue  # trailer fields are not read
            size = line.split(b";", 1)[0].strip()
            if not _HEX(size):  # int(size, 16) alone also reads "-2", "+2", "0x2" and "0_2"
                raise TransportError("the chunked body is malformed")
            self._left = int(size, 16)
            self._chunk = "data" if self._left else "trailer"


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimedOut())


def _digits(text: str, most: int) -> bool:
    """ASCII digits, at most ``most`` of them: ``str.isdigit`` also takes a superscript digit, which ``int`` refuses."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _parse_head(head: str) -> tuple[int, str, CIMultiDictProxy[str]]:
    lines = head.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not _digits(code, 3) or len(code) != 3:
        raise TransportError("the answer is not HTTP/1.1")
    pairs = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and pairs:  # obs-fold: the field goes on, after a space
            name, value = pairs[-1]
            pairs[-1] = (name, (value + " " + line.strip(" \t")).strip(" \t"))
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name[0] in " \t" or name[-1] in " \t":
            raise TransportError("the answer's header is malformed")
        pairs.append((name, value.strip(" \t")))
    return int(code), version, CIMultiDictProxy(CIMultiDict(pairs))
