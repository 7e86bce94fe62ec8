"""Settings read from flags and the environment, checked before anything is sent.

A malformed service address or key is a user mistake: it must end the command with exit 2 and
one line, not fail every item against a host that cannot exist (and warn of double billing that
cannot have happened), nor reach the HTTP layer as an "internal error".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from batchgen.core.errors import UserError

__all__ = ["KEY_VARIABLE", "KEYS_FILE_VARIABLE", "KEYS_VARIABLE", "check_base_url", "read_api_key", "read_api_keys"]

KEY_VARIABLE = "SEGMIND_API_KEY"
KEYS_VARIABLE = "SEGMIND_API_KEYS"  # several keys, comma-separated: a key pool
KEYS_FILE_VARIABLE = "SEGMIND_API_KEYS_FILE"  # a file of keys, one a line (a mounted Secret)


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
    _check_key(key, KEY_VARIABLE)
    return key


def _check_key(key: str, where: str) -> None:
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise UserError(
            f"{where} holds a line break, space, control or non-ASCII character "
            "(a key file with a comment line?): set it to the key alone"
        )


def read_api_keys(environ: Mapping[str, str]) -> list[str]:
    """Every key of the run, in order: ``SEGMIND_API_KEY``, then ``SEGMIND_API_KEYS`` (comma-separated),
    then the lines of the file ``SEGMIND_API_KEYS_FILE`` names (blank lines and ``#`` comments skipped).

    Each is checked as ``read_api_key`` checks one; a bad or repeated key ends the command (exit 2)
    with a message that names its place (variable, position, file line), never its value: a key
    sent twice would only halve the rate it was meant to add. [] when none is set.
    """
    found: list[tuple[str, str]] = []  # (key, where it was given)
    single = read_api_key(environ)
    if single is not None:
        found.append((single, KEY_VARIABLE))
    listed = environ.get(KEYS_VARIABLE, "")
    entries = [e.strip() for e in listed.split(",")] if listed.strip() else []
    for n, key in enumerate(e for e in entries if e):
        found.append((key, f"{KEYS_VARIABLE} key {n + 1}"))
    file_name = environ.get(KEYS_FILE_VARIABLE, "").strip()
    if file_name:
        found.extend(_keys_in_file(Path(file_name)))
    seen: dict[str, str] = {}
    for key, where in found:
        _check_key(key, where)
        if key in seen:
            raise UserError(f"{where} repeats {seen[key]}: give each key once")
        seen[key] = where
    return [key for key, _ in found]


def _keys_in_file(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"{KEYS_FILE_VARIABLE}: cannot read {path}: {e.strerror or e}") from None
    keys = []
    for n, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append((key, f"{KEYS_FILE_VARIABLE} ({path}) line {n}"))
    if not keys:
        raise UserError(f"{KEYS_FILE_VARIABLE}: {path} holds no key (one a line; blank lines and # comments are skipped)")
    return keys
