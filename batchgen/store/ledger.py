"""The ledger: an append-only JSONL file that is the single source of truth of a batch.

Every state change of every item is one line. The in-memory state of a run is a fold over these
lines, so resuming after a crash is nothing more than replaying the file and feeding the same
pipeline. Each line is flushed to the operating system as soon as it is written (a SIGKILL loses
nothing that was written); an fsync follows at most ``fsync_interval`` seconds later and at close,
which bounds what a power cut can take to that window.

This module is the file: reading, repairing and appending lines. What a line may say is in
``events``; what the lines add up to is ``fold`` (both re-exported here for their older callers).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from batchgen.core import fastjson
from batchgen.core.errors import BatchgenError
from batchgen.core.gcpause import gc_paused
from batchgen.store.events import Event, EventKind, Phase
from batchgen.store.files import atomic_write_text, open_nofollow, refuse_link
from batchgen.store.fold import ItemState, LedgerState, apply, fold, parse_ts

try:
    from orjson import loads as _orjson_loads
except ImportError:  # the standard library reads every line then (``fastjson``), only slower
    _orjson_loads = None

__all__ = [
    "COMPLETED",
    "DOWNLOADED",
    "FAILED",
    "INTENT",
    "PENDING",
    "SUBMITTED",
    "ItemState",
    "Ledger",
    "LedgerCorrupt",
    "LedgerState",
    "apply",
    "file_version",
    "fold",
    "parse_ts",
    "read_events",
    "readable_events",
    "repair",
    "replay",
    "utc_now",
]

_READ_BUFFER = 1 << 20  # a 100k-item ledger is 85 MB: read it in 85 calls, not 10,000

# The item states under their old names, for code written before ``Phase``.
PENDING = Phase.PENDING
INTENT = Phase.INTENT  # the POST may or may not have reached the service
SUBMITTED = Phase.SUBMITTED
COMPLETED = Phase.COMPLETED
DOWNLOADED = Phase.DOWNLOADED
FAILED = Phase.FAILED


class LedgerCorrupt(BatchgenError):
    """A line in the middle of the ledger is not JSON: something other than a crash damaged it."""

    def __init__(self, path: Path, line: int, detail: str) -> None:
        super().__init__(f"{path}:{line}: corrupt ledger line ({detail}); run 'batchgen ledger repair {path.parent}'")
        self.path = path
        self.line = line


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_events(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """Yield ``(line_number, event_or_None, raw)``; ``None`` marks a line that is not a JSON object."""
    for n, ev, raw in _lines(path):
        yield n, ev, raw.decode("utf-8", errors="replace")


def _parse(raw: bytes) -> dict[str, Any] | None:
    """One line as ``read_events`` has always read it: decoded (a bad byte replaced), then JSON."""
    try:
        ev = fastjson.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, bytes]]:
    """``(line_number, event_or_None, raw bytes)``. orjson reads valid UTF-8 bytes as it reads their
    text, so a line is decoded only when orjson refuses it (and is then read as ``_parse`` reads it)."""
    quick = _orjson_loads
    with open(path, "rb", buffering=_READ_BUFFER) as f:
        for n, raw in enumerate(f, start=1):
            ev: Any = None
            if quick is not None:
                try:
                    ev = quick(raw)
                except ValueError:
                    ev = None
            if ev.__class__ is not dict:
                ev = _parse(raw)
            yield n, ev, raw


def file_version(path: Path) -> tuple[int, int, int] | None:
    """What changes whenever the ledger does (appended, repaired, replaced); None when it is absent.

    Taken before a replay, it tells whether that replay is still current later without replaying again.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent, as replay() sees it
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def readable_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of a ledger for readers (status, exports, report), with replay's rules:
    a torn last line is skipped, an unreadable line anywhere else raises LedgerCorrupt."""
    bad: tuple[int, str] | None = None
    for n, ev, _raw in _lines(path):
        if bad is not None:
            raise LedgerCorrupt(path, bad[0], bad[1])
        if ev is None:
            bad = (n, "not a JSON object")
            continue
        yield ev


def replay(path: Path, into: LedgerState | None = None) -> LedgerState:
    """State of a ledger file; tolerates a torn last line and refuses a corrupt line elsewhere.

    ``into``: a state holding older history to continue from (a shard's items in the folder's
    unsharded ledger); its ``lines`` and ``torn_tail`` become this file's."""
    state = LedgerState() if into is None else into
    if not path.exists():
        return state
    bad: tuple[int, str] | None = None
    quick = _orjson_loads
    n = 0
    # ``_lines`` inlined: a resume replays four lines per item. No cyclic collection meanwhile: a
    # million items' states are built here, none of them garbage.
    with gc_paused(), open(path, "rb", buffering=_READ_BUFFER) as f:
        for raw in f:
            n += 1
            if bad is not None:
                raise LedgerCorrupt(path, bad[0], bad[1])
            ev: Any = None
            if quick is not None:
                try:
                    ev = quick(raw)
                except ValueError:
                    ev = None
            if ev.__class__ is not dict:
                ev = _parse(raw)
                if ev is None:
                    text = raw.decode("utf-8", errors="replace")
                    bad = (n, "not a JSON object: " + text.strip()[:40])
                    continue
            apply(state, ev)
    if n:  # an empty file leaves ``into``'s count as it was
        state.lines = n
    if bad is not None:
        state.torn_tail = True
    return state


def repair(path: Path) -> tuple[int, Path | None]:
    """Move every unreadable line to ``ledger.rejected.jsonl`` (``ledger.shard-….rejected.jsonl``
    for a shard's ledger) and keep the rest in order.

    Returns how many lines were moved aside and where. The original is replaced atomically.
    """
    kept: list[str] = []
    rejected: list[str] = []
    for n, ev, raw in read_events(path):
        line = raw if raw.endswith("\n") else raw + "\n"
        if ev is None:
            rejected.append(json.dumps({"line": n, "raw": raw.rstrip("\n")}) + "\n")
        else:
            kept.append(line)
    if not rejected:
        return 0, None
    refuse_link(path)
    aside = path.with_name(path.name.removesuffix(".jsonl") + ".rejected.jsonl")
    with os.fdopen(open_nofollow(aside, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8") as f:
        f.writelines(rejected)
        f.flush()
        os.fsync(f.fileno())
    atomic_write_text(path, "".join(kept))
    return len(rejected), aside


def open_for_append(path: Path) -> IO[str]:
    """The ledger file, opened for appending without following a planted link."""
    return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")


class Ledger:
    """Appends events to ``ledger.jsonl`` and keeps the folded state current.

    Writes are synchronous on purpose: a line is a few hundred bytes, ``write`` + ``flush`` to the
    page cache costs microseconds, and doing it inline means no event can be reordered or lost
    between an ``await`` and a crash.
    """

    def __init__(self, path: Path, fsync_interval: float = 1.0, state: LedgerState | None = None) -> None:
        """``state``: the replay of ``path`` the caller already holds (a 100k-item ledger takes seconds to
        replay); it must be current, i.e. taken under the output lock or checked unchanged since."""
        self.path = path
        self.state = replay(path) if state is None else state
        self.fsync_interval = fsync_interval
        self._f: IO[str] | None = None
        self._last_sync = time.monotonic()
        self._dirty = False

    def open(self) -> None:
        refuse_link(self.path)
        if self.state.torn_tail:
            _drop_torn_tail(self.path)
            self.state.torn_tail = False
        else:
            _end_last_line(self.path)
        self._f = open_for_append(self.path)  # kept open for the run

    def write(self, event: Event) -> dict[str, Any]:
        """Append one event built by ``events`` (the typed way to write a line)."""
        return self.append(event.kind, event.item, **event.fields)

    def append(self, event: EventKind | str, item: str | None, **fields: Any) -> dict[str, Any]:
        """Append one line; fields that are None are left out. An unknown kind is refused (ValueError):
        a line the fold would ignore is a bug of the writer."""
        ev: dict[str, Any] = {"ts": utc_now(), "item": item, "event": EventKind(event)}
        ev.update({k: v for k, v in fields.items() if v is not None})
        line = fastjson.dumps(ev) + "\n"
        if self._f is None:
            raise RuntimeError("ledger is not open")
        self._f.write(line)
        self._f.flush()
        self._dirty = True
        self.state.lines += 1
        apply(self.state, ev)
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval:
            self.sync()
        return ev

    def sync(self) -> None:
        if self._f is not None and self._dirty:
            os.fsync(self._f.fileno())
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._f is not None:
            try:
                self.sync()
            finally:
                self._f.close()
                self._f = None


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line so the next append starts on a fresh line."""
    with open(path, "rb+") as f:
        data = f.read()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)


def _end_last_line(path: Path) -> None:
    """A whole last event whose newline never reached the disk gets one, so the next append
    does not run into it (which would turn both lines into one unreadable line)."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
    except FileNotFoundError:
        return
