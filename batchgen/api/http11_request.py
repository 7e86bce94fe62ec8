"""An HTTP/1.1 request's bytes: where a URL goes (origin, Host, request target) and the head sent.

Kept apart from the transport because it is pure: no socket, no loop, the same answer for the same
URL, so the origins a run talks to are parsed once and looked up after that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from batchgen.api.transport import ACCEPT_ENCODING, Unfetchable

__all__ = ["Target", "request_head", "target_of"]

_PLAIN_TARGET = re.compile(r"[!-~]*\Z").match  # printable ASCII, no space: sent as written


class Target(NamedTuple):
    scheme: str
    host: str
    port: int
    authority: str  # the Host header
    path: str  # the request target: path and query

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


# "scheme://authority" as URLs spell it -> its parsed parts: most requests go to the one or two
# origins a run talks to, and splitting their URLs in full each time was a measurable share.
_ORIGINS: dict[str, tuple[str, str, int, str]] = {}


def target_of(url: str) -> Target:
    start = url.find("://") + 3
    if start > 2:
        slash = url.find("/", start)
        if slash > 0:
            origin = _ORIGINS.get(url[:slash])
            path = url[slash:]
            if origin is not None and "#" not in path and _PLAIN_TARGET(path):
                return Target(*origin, path)
    return _parse(url)


def _parse(url: str) -> Target:
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        raise Unfetchable("invalid URL") from None
    if scheme not in ("http", "https") or not host:
        raise Unfetchable("invalid URL")
    try:
        # As the resolver will encode it: a label it refuses (empty, over 63) is refused here, typed.
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise Unfetchable("invalid URL") from None
    default = 443 if scheme == "https" else 80
    port = port or default
    name = f"[{host}]" if ":" in host else host
    origin = (scheme, host, port, name if port == default else f"{name}:{port}")
    prefix = f"{parts.scheme}://{parts.netloc}"
    if url.startswith(prefix + "/") and "@" not in parts.netloc:
        if len(_ORIGINS) > 64:  # a run meets a handful; never let odd URLs grow it without bound
            _ORIGINS.clear()
        _ORIGINS[prefix] = origin
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _PLAIN_TARGET(path):
        path = quote(path, safe="!$&'()*+,/:;=?@[]~%")
    return Target(*origin, path)


def request_head(method: str, target: Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request's bytes up to its body: the headers given, then the few every request needs."""
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"]
    given = set()
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise Unfetchable(f"invalid request header {name[:40]!r}")
        given.add(name.lower())
        lines.append(f"{name}: {value}\r\n")
    if "accept" not in given:
        lines.append("Accept: */*\r\n")
    if "accept-encoding" not in given:
        lines.append(f"Accept-Encoding: {ACCEPT_ENCODING}\r\n")
    if body is not None:
        if "content-type" not in given:
            lines.append("Content-Type: text/plain; charset=utf-8\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()
