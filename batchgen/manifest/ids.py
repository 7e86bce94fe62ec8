"""Item ids: safe as file names on any OS, derived from content, unique case-insensitively."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from batchgen.core.fastjson import canonical_bytes

__all__ = ["IdBook", "check_safe_name", "default_name", "derive_id"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch: "$" would pass "foo\n"
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


def check_safe_name(value: str) -> str | None:
    """Why ``value`` is unsafe as a file or folder name on any common OS, or None when it is safe.

    Ids become file names and the name a folder, so anything that could escape the output folder,
    hide a file or trip Windows is refused up front rather than failing halfway through a run.
    """
    if not _SAFE_NAME.fullmatch(value):
        return (
            "must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (no slashes, spaces or leading dot), got {value!r}"
        )
    stem = value.partition(".")[0]
    if len(stem) <= 4 and stem.upper() in _WINDOWS_RESERVED:  # every reserved name has 3 or 4 letters
        return f"{value!r} is a reserved file name on Windows"
    return None


def default_name(stem: str) -> str:
    """The run's name when the manifest gives none: its file stem, made safe as a folder name."""
    if check_safe_name(stem) is None:
        return stem
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:100]
    return s if s and check_safe_name(s) is None else "manifest"


def _slug(text: str) -> str:
    s = _SLUG_DROP.sub("-", text.lower()).strip("-")[:40].strip("-")
    return s or "item"


def derive_id(params: Mapping[str, Any]) -> str:
    """Id from content, not position: inserting prompts must not rename (and so resubmit) others."""
    prompt = params.get("prompt")
    slug = _slug(prompt if isinstance(prompt, str) else "")
    digest = hashlib.sha256(canonical_bytes(dict(params))).hexdigest()[:8]
    return f"{slug}-{digest}"


class IdBook:
    """The explicit ids of a manifest, casefolded, with where each was set (for a duplicate's message).

    ``where`` is kept as (file, line) and phrased only for a duplicate: 100k ids, 100k fewer strings.
    """

    def __init__(self, manifest: str = "") -> None:
        self.manifest = manifest  # a duplicate in the manifest itself is "on line N", elsewhere "on file:N"
        self.claimed: dict[str, tuple[str, str, int]] = {}

    def claim(self, value: Any, file: str, line: int) -> str:
        """``value`` as an id, reserved; raises ValueError with the message when it cannot be one."""
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {value!r} (quote it)")
        why = check_safe_name(value)
        if why:
            raise ValueError(f"not safe as a file name: {why}")
        folded = value.casefold()
        if folded in self.claimed:
            first, first_file, first_line = self.claimed[folded]
            where = f"line {first_line}" if first_file == self.manifest else f"{first_file}:{first_line}"
            raise ValueError(
                f"duplicate id {value!r}: already used by {first!r} on {where} (ids are case-insensitive)"
            )
        self.claimed[value if folded == value else folded] = (value, file, line)
        return value
