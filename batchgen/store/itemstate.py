"""One item's state as the fold keeps it: what the ledger knows of it, in as little memory as it takes.

A replay holds one per item of the folder, a million for a million-row prompts file, and a run
holds them all to its end. So the state is slotted, and its two longest strings are kept short
where that loses nothing: a sha256 of 64 lowercase hex digits as its 32 bytes, and a file name as
the downloader writes it (``images/<bucket>/<item><ext>``, or ``images/<item><ext>`` from before
buckets, with one of the usual image extensions) as its folder and extension alone, one shared
object for each. Reading either attribute gives back the very text the ledger recorded.
"""

from __future__ import annotations

import string
from typing import Any

from batchgen.store.events import Phase

__all__ = ["ItemState"]

_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_HEX = frozenset(string.hexdigits.lower())


class _Layout:
    """``<folder><item><ext>``: the folder and the extension, the item's own id between them."""

    __slots__ = ("folder", "ext")

    def __init__(self, folder: str, ext: str) -> None:
        self.folder = folder
        self.ext = ext


# "images/" and its 256 bucket folders, with each usual extension: at most 257 * 5 objects
_LAYOUTS: dict[tuple[str, str], _Layout] = {}
# The same layouts by their text without the item, one table per folder length (10 for a bucket,
# 7 for "images/"): a replay finds a file's layout with one lookup instead of checking its parts.
_SHAPES: tuple[dict[str, _Layout], dict[str, _Layout]] = ({}, {})


def _layout(folder: str, ext: str) -> _Layout:
    found = _LAYOUTS.get((folder, ext))
    if found is None:
        found = _LAYOUTS[(folder, ext)] = _Layout(folder, ext)
    return found


def _shape(value: str, item: str, cut: int) -> _Layout | None:
    """The layout of ``value`` when it is ``<folder><item><ext>`` with ``cut`` characters of folder
    (``value`` starts with ``item`` at ``cut``), or None when it is not one the state keeps short."""
    ext = value[cut + len(item) :]
    if ext not in _EXTS or not value.startswith("images/"):
        return None
    if cut == 10 and not (value[9] == "/" and value[7] in _HEX and value[8] in _HEX):
        return None
    return _layout(value[:cut], ext)


_FIELDS = (
    "item", "state", "request_id", "submitted_ts", "output_url", "file", "sha256", "bytes", "downloaded_ts",
    "file_params_sha", "error", "retryable", "params_sha", "cost_usd", "submits", "intents", "uncertain",
    "expired", "paid", "key_fp",
)


class ItemState:
    """What the ledger knows of one item; mutable only inside ``fold``. Compares and prints as the
    dataclass it was (every field by its value, in this order)."""

    __slots__ = (
        "item", "state", "request_id", "submitted_ts", "output_url", "_file", "_sha256", "bytes",
        "downloaded_ts", "file_params_sha", "error", "retryable", "params_sha", "cost_usd", "submits",
        "intents", "uncertain", "expired", "paid", "key_fp",
    )
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __init__(
        self,
        item: str,
        state: Phase = Phase.PENDING,
        request_id: str | None = None,
        submitted_ts: float | None = None,  # epoch seconds of the accepted submit
        output_url: str | None = None,
        file: str | None = None,
        sha256: str | None = None,
        bytes: int | None = None,  # noqa: A002 - the ledger's own field name
        downloaded_ts: float | None = None,  # epoch seconds of the line that recorded ``file``
        file_params_sha: str | None = None,  # params_sha of the intent that made ``file``
        error: str | None = None,
        retryable: bool = False,
        params_sha: str | None = None,
        cost_usd: float | None = None,
        submits: int = 0,  # accepted submits over the item's whole history (each one was billable)
        intents: int = 0,
        uncertain: int = 0,  # intents whose answer never arrived
        expired: int = 0,
        paid: bool = False,  # at least one request reached COMPLETED
        key_fp: str | None = None,  # fingerprint of the key of the latest intent or request (never the key)
    ) -> None:
        self.item = item
        self.state = state
        self.request_id = request_id
        self.submitted_ts = submitted_ts
        self.output_url = output_url
        self._file = None
        self._sha256 = None
        if file is not None:
            self.file = file
        if sha256 is not None:
            self.sha256 = sha256
        self.bytes = bytes
        self.downloaded_ts = downloaded_ts
        self.file_params_sha = file_params_sha
        self.error = error
        self.retryable = retryable
        self.params_sha = params_sha
        self.cost_usd = cost_usd
        self.submits = submits
        self.intents = intents
        self.uncertain = uncertain
        self.expired = expired
        self.paid = paid
        self.key_fp = key_fp

    @property
    def file(self) -> Any:
        f = self._file
        return f.folder + self.item + f.ext if f.__class__ is _Layout else f

    @file.setter
    def file(self, value: Any) -> None:
        # images/<item><ext>, or images/<two lowercase hex digits>/<item><ext>
        if value.__class__ is str:
            item = self.item
            cut = 10 if value[9:10] == "/" else 7
            if value.startswith(item, cut):
                shapes = _SHAPES[cut == 7]
                key = value[:cut] + value[cut + len(item) :]
                found = shapes.get(key)
                if found is None and len(shapes) < 2048:
                    found = _shape(value, item, cut)
                    if found is not None:
                        shapes[key] = found
                if found is not None:  # value is its folder + item + ext, to the character
                    self._file = found
                    return
        self._file = value

    @property
    def sha256(self) -> Any:
        h = self._sha256
        return h.hex() if h.__class__ is bytes else h

    @sha256.setter
    def sha256(self, value: Any) -> None:
        if value.__class__ is str and len(value) == 64:
            try:
                digest = bytes.fromhex(value)
            except ValueError:
                digest = None
            if digest is not None and digest.hex() == value:  # lowercase hex, nothing else: reads back the same
                self._sha256 = digest
                return
        self._sha256 = value

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not ItemState:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return "ItemState(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS) + ")"
