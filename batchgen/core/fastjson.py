"""JSON through orjson when it is installed, the standard library otherwise.

Every request and every ledger line goes through here; orjson roughly halves the time spent
encoding and decoding them. The output is the same compact UTF-8 either way, so a ledger written
with one replays with the other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_bytes", "canonical_json", "dumps", "loads", "params_match", "params_sha"]

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests that hide orjson
    orjson = None  # type: ignore[assignment]


def _std_dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


if orjson is not None:
    _loads = orjson.loads
    _SORT_KEYS = orjson.OPT_SORT_KEYS

    def dumps(obj: Any) -> str:
        """Compact JSON text; values orjson refuses (huge ints, odd keys) fall back to the stdlib."""
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return _std_dumps(obj)

    def loads(text: str | bytes) -> Any:
        try:
            return _loads(text)
        except orjson.JSONDecodeError:
            # The stdlib accepts a few things orjson does not (NaN, lone surrogates); stay as liberal.
            return json.loads(text)

else:
    dumps = _std_dumps
    loads = json.loads


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one canonical text of a JSON value: sorted keys, compact, UTF-8 (no ``\\u`` escapes).

    Ids derived from parameters, the params hash and the duplicate check all compare this text,
    so two equal parameter sets always give the same bytes. orjson writes it (a million rows
    derive a million ids) only for values it spells exactly as the standard library does:
    strings, 64-bit integers, booleans, null, and dicts and lists of those. It writes floats its
    own way (``1e-7``, not ``1e-07``), so a value with a float is left to the standard library.
    """
    if orjson is not None and _spelled_alike(value):
        try:
            return orjson.dumps(value, option=_SORT_KEYS).decode()
        except TypeError:  # an integer past 64 bits, a non-string key, a lone surrogate
            pass
    return _CANONICAL.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """``canonical_json(value).encode()``, which is what the hashes of it read, without the round trip
    through ``str`` (UnicodeEncodeError for a lone surrogate, as that call raises)."""
    if orjson is not None and _spelled_alike(value):
        try:
            return orjson.dumps(value, option=_SORT_KEYS)
        except TypeError:  # an integer past 64 bits, a non-string key, a lone surrogate
            pass
    return _CANONICAL.encode(value).encode()


def _spelled_alike(value: Any) -> bool:
    t = value.__class__
    if t is dict or t is list:
        for v in value.values() if t is dict else value:
            c = v.__class__
            if not (c is str or c is int or c is bool or v is None or ((c is dict or c is list) and _spelled_alike(v))):
                return False
        return True
    return t is str or t is int or t is bool or value is None


def params_sha(params: Any) -> str:
    """Short hash of the parameters sent, recorded with every intent to notice later edits."""
    return _sha256(canonical_bytes(params)).hexdigest()[:16]


_sha256 = hashlib.sha256


def _legacy_params_sha(params: Any) -> str:
    # Ledgers written before 0.2 hashed the ASCII-escaped form; they must keep matching.
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def params_match(recorded: str | None, params: Any) -> bool:
    """Whether a recorded params hash (either form) belongs to ``params``; unknown counts as a match."""
    if recorded is None:
        return True
    # params_sha inlined for the usual parameters: a resume checks every downloaded item's hash this way
    if orjson is not None and params.__class__ is dict and _spelled_alike(params):
        try:
            if recorded == _sha256(orjson.dumps(params, option=_SORT_KEYS)).hexdigest()[:16]:
                return True
        except TypeError:
            pass
    return recorded == params_sha(params) or recorded == _legacy_params_sha(params)
