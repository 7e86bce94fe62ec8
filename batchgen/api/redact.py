"""Masking every echo of the API key in text that may reach a message, a log line or the ledger.

Gateways echo what they were sent in error pages. A plain ``replace`` misses the same key written
as JSON escapes (``\\u0053\\u0047...``), percent-escapes, or cut short ("key SG_1a2b3c4d... is
invalid"); each of those would still hand the key to whoever reads the log.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "key_pattern", "min_echo"]

MASK = "***"


def min_echo(key: str) -> int:
    """Shortest run of the key's characters treated as an echo: long enough not to mask by chance."""
    return max(6, min(10, len(key) // 3)) if len(key) >= 6 else len(key)


def _hex(value: int, width: int) -> str:
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _char(c: str) -> str:
    """One key character as it may appear: itself, a JSON escape, a percent-escape."""
    code = ord(c)
    alts = [re.escape(c), r"\\u" + _hex(code, 4)]
    if code < 0x80:
        alts.append("%" + _hex(code, 2))
    if c == "/":
        alts.append(r"\\/")
    return "(?:" + "|".join(alts) + ")"


def key_pattern(key: str) -> re.Pattern[str]:
    """A pattern for any run of at least ``min_echo(key)`` consecutive characters of the key.

    Each alternative starts at one position of the key and extends, greedily, as far as the text
    keeps following the key, so a whole echo is masked as one piece.
    """
    chars = [_char(c) for c in key]
    n = min_echo(key)
    alternatives = []
    for start in range(len(key) - n + 1):
        tail = ""
        for c in reversed(chars[start + n :]):
            tail = f"(?:{c}{tail})?"
        alternatives.append("".join(chars[start : start + n]) + tail)
    return re.compile("|".join(alternatives))
