"""Settings read from flags and the environment, checked before anything is sent.

A malformed service address or key is a user mistake: it must end the command with exit 2 and
one line, not fail every item against a host that cannot exist (and warn of double billing that
cannot have happened), nor reach the HTTP layer as an "internal error".
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from batchgen.core.errors import UserError

__all__ = ["KEY_VARIABLE", "check_base_url", "read_api_key"]

KEY_VARIABLE = "SEGMIND_API_KEY"


def check_base_url(text: str, flag: str = "--base-url") -> str:
    """The server's address as ``scheme://host[:port]``; raises UserError for anything else.

    Only the origin is accepted: the protocol's paths are fixed (``/v2/...``), so a path, query or
    fragment would silently send every request somewhere unintended.
    """
    shown = text.strip()
    example = "e.g. https://api.segmind.com or http://127.0.0.1:8765"
    try:
        parts = urlsplit(shown)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise UserError(f"{flag} {shown!r}: not a URL, {example}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise UserError(f"{flag} {shown!r}: needs http:// or https:// and a host, {example}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UserError(f"{flag} {shown!r}: the port is not a number from 0 to 65535") from None
    if not host:
        raise UserError(f"{flag} {shown!r}: no host name, {example}")
    if parts.username is not None or parts.password is not None:
        raise UserError(f"{flag}: no user or password in the address; the key goes in {KEY_VARIABLE}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(f"{flag} {shown!r}: give the server's address only, without a path, query or fragment ({example})")
    netloc = host if port is None else f"{host}:{port}"
    if ":" in host:  # an IPv6 literal keeps its brackets
        netloc = f"[{host}]" if port is None else f"[{host}]:{port}"
    return f"{parts.scheme.lower()}://{netloc}"


def read_api_key(environ: Mapping[str, str]) -> str | None:
    """The key from the environment, or None when unset; raises UserError when it cannot be a key.

    A key read from a file often brings a second line (a comment, a trailing note): sending that
    would fail inside the HTTP layer or, worse, send part of the file. The message never shows the
    value.
    """
    key = environ.get(KEY_VARIABLE, "").strip()
    if not key:
        return None
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise UserError(
            f"{KEY_VARIABLE} holds a line break, space, control or non-ASCII character "
            "(a key file with a comment line?): set it to the key alone"
        )
    return key
