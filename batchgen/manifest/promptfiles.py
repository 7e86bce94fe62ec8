"""Prompts kept outside the manifest: ``.txt``, ``.jsonl`` or ``.csv`` files, one prompt per row.

Dataset builders keep prompts in whatever their other tools write; these readers turn each row into
the same mapping an inline item would be, with the row's line so that a mistake is reported as
``prompts.csv:17: seed: ...`` rather than somewhere in the manifest.

Rows end at ``\n`` (or ``\r\n``) and nowhere else: ``str.splitlines`` would also split at a form
feed, U+0085 or U+2028, and U+2028 is valid inside a JSON string. A row that cannot be read is
reported and skipped, so one run lists the bad rows of a file, not the first one.

A file is streamed, a row at a time: a million rows are never held as text, lines and mappings at
once. What fails the file as a whole (its size, a byte that is not UTF-8, a CSV the csv module
cannot read) is found by a first pass before any row is given out, so a bad file is reported as
that one mistake, as when files were read whole. JSONL rows are read by orjson where it reads the
line as the standard library does (no integer past 64 bits, nothing it refuses); the standard
library reads the rest and words every mistake.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from batchgen.models import ModelSpec

from .readfile import Unreadable, chunks, open_regular

try:
    from orjson import loads as _orjson_loads
except ImportError:  # the standard library reads every row then
    _orjson_loads = None

__all__ = ["MAX_PROMPTS_FILE_BYTES", "SUFFIXES", "read_rows"]

MAX_PROMPTS_FILE_BYTES = 512 * 1024 * 1024
SUFFIXES = (".txt", ".jsonl", ".csv")
_BOM = b"\xef\xbb\xbf"
# orjson reads an integer past 64 bits as a float where the standard library keeps it exact: a line
# with 19 digits in a row (anywhere, a string too) is left to the standard library.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_UNREAD: Any = object()

# (line, field or None, message) -> the exception for it
ErrorFactory = Callable[[int | None, str | None, str], Exception]
# records a bad row's exception; reading goes on with the next row
Note = Callable[[Exception], None]
Rows = Iterator[tuple[int, dict[str, Any]]]


def _raise(e: Exception) -> None:
    raise e


def _ignore(e: Exception) -> None:
    pass


def read_rows(path: Path, spec: ModelSpec | None, fail: ErrorFactory, note: Note = _raise) -> Rows:
    """``(line, mapping)`` per prompt; the mapping has ``prompt`` and optionally ``id``, parameters.

    A mistake in the file as a whole is raised before the first row; a bad row goes to ``note``
    and is left out. Each mapping is new and the caller's to keep.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise fail(None, None, f"unsupported prompts file type {suffix or '(none)'!r} (use .txt, .jsonl or .csv)")
    try:
        fd = open_regular(path, MAX_PROMPTS_FILE_BYTES, "prompts file")
    except Unreadable as e:
        raise fail(None, None, e.message) from None
    try:
        _check_bytes(fd, fail)
        if suffix == ".csv":
            os.lseek(fd, 0, os.SEEK_SET)
            for _ in _csv(_text(fd), spec, fail, _ignore):  # raises what the reading below would
                pass
        os.lseek(fd, 0, os.SEEK_SET)
        bad = 0

        def noted(e: Exception) -> None:
            nonlocal bad
            bad += 1
            note(e)

        if suffix == ".txt":
            rows = _txt(_lines(fd), fail)
        elif suffix == ".jsonl":
            rows = _jsonl(_lines(fd), fail, noted)
        else:
            rows = _csv(_text(fd), spec, fail, noted)
        given = 0
        for row in rows:
            given += 1
            yield row
        if not given and not bad:
            raise fail(None, None, "has no prompts")
    except Unreadable as e:  # the file changed since the first pass
        raise fail(None, None, e.message) from None
    except UnicodeDecodeError:
        raise fail(None, None, "not valid UTF-8") from None
    finally:
        os.close(fd)


def _check_bytes(fd: int, fail: ErrorFactory) -> None:
    """The size cap and UTF-8, over the whole file, a whole number of lines at a time."""
    lines_before = 0
    carry = b""
    for chunk in chunks(fd, MAX_PROMPTS_FILE_BYTES):
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        _utf8(data[:cut], lines_before, fail)
        lines_before += data.count(b"\n", 0, cut)
    _utf8(carry, lines_before, fail)


def _utf8(piece: bytes, lines_before: int, fail: ErrorFactory) -> None:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lines_before + piece.count(b"\n", 0, e.start) + 1
        raise fail(line, None, f"not valid UTF-8 (byte 0x{piece[e.start]:02x})") from None


def _lines(fd: int) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of each line, ended by ``\n`` (or ``\r\n``) only, without its end;
    a leading BOM dropped (as decoding with ``utf-8-sig`` drops it)."""
    n = 0
    carry = b""
    head = True
    for chunk in chunks(fd, MAX_PROMPTS_FILE_BYTES):
        data = carry + chunk
        if head:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                carry = data
                continue
            head = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        parts = data.split(b"\n")
        carry = parts.pop()
        for raw in parts:
            n += 1
            yield n, raw[:-1] if raw.endswith(b"\r") else raw
    if carry:
        yield n + 1, carry[:-1] if carry.endswith(b"\r") else carry


def _decoded(raw: bytes, n: int, fail: ErrorFactory) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:  # changed since the first pass read it
        raise fail(n, None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None


class _Capped(io.RawIOBase):
    """The file from where it stands, for the csv module's text reader; Unreadable past the cap."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), MAX_PROMPTS_FILE_BYTES + 1 - self.total)
        try:
            data = os.read(self.fd, want)
        except OSError as e:
            raise Unreadable(f"cannot read: {e.strerror or e}") from None
        self.total += len(data)
        if self.total > MAX_PROMPTS_FILE_BYTES:
            raise Unreadable(f"file is too large (over the limit of {MAX_PROMPTS_FILE_BYTES} bytes)")
        buffer[: len(data)] = data
        return len(data)


def _text(fd: int) -> io.TextIOWrapper:
    """The file as text lines split as ``io.StringIO(text, newline="")`` splits them (the csv
    module's way: at ``\r``, ``\n`` and ``\r\n``, ends kept), a leading BOM dropped."""
    return io.TextIOWrapper(io.BufferedReader(_Capped(fd)), encoding="utf-8-sig", newline="")


def _txt(lines: Iterable[tuple[int, bytes]], fail: ErrorFactory) -> Rows:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    for n, raw in lines:
        s = _decoded(raw, n, fail).strip()
        if s and not s.startswith("#"):
            yield n, {"prompt": s}


def _jsonl(lines: Iterable[tuple[int, bytes]], fail: ErrorFactory, note: Note) -> Rows:
    quick = _orjson_loads
    for n, raw in lines:
        obj = _UNREAD
        if quick is not None and not _LONG_DIGITS.search(raw):
            try:
                obj = quick(raw)
            except ValueError:
                obj = _UNREAD
        if obj is _UNREAD:
            line = _decoded(raw, n, fail)
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_no_constant)
            except ValueError as e:
                note(fail(n, None, f"not valid JSON: {e}"))
                continue
            except RecursionError:
                note(fail(n, None, "not valid JSON: nested too deeply"))
                continue
        if not isinstance(obj, dict):
            note(fail(n, None, "each line must be a JSON object with a prompt"))
            continue
        yield n, obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _csv(lines: Iterable[str], spec: ModelSpec | None, fail: ErrorFactory, note: Note) -> Rows:
    """A header row names the columns; empty cells mean 'not set'. Cells are typed by the model."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise fail(1, None, f"CSV error: {e}") from None
    names = [h.strip() for h in header]
    if "prompt" not in names:
        raise fail(1, None, "the header row must have a 'prompt' column")
    for i, name in enumerate(names):
        if not name:
            raise fail(1, None, f"column {i + 1} has no name in the header row")
        if name in names[:i]:
            raise fail(1, name, "duplicate column")
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise fail(start, None, f"CSV error: {e}") from None
        line, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(names):
            note(fail(line, None, f"{len(cells)} cells but the header names {len(names)} columns"))
            continue
        row: dict[str, Any] = {}
        try:
            for name, cell in zip(names, cells, strict=False):
                if cell.strip() == "":
                    continue
                row[name] = _cell(name, cell, spec, lambda f, m, line=line: _CellError(fail(line, f, m)))
        except _CellError as e:
            note(e.error)
            continue
        yield line, row


class _CellError(Exception):
    """A cell that cannot be typed; carries the caller's error for it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _cell(name: str, cell: str, spec: ModelSpec | None, fail: Callable[[str, str], Exception]) -> Any:
    if name in ("prompt", "id", "negative_prompt"):
        return cell if name != "id" else cell.strip()
    kind = "integer" if name == "variants" else None
    if kind is None and spec is not None:
        p = spec.by_name.get(name)
        kind = p.kind if p is not None else "string"
    s = cell.strip()
    if kind == "integer":
        try:
            return int(s)
        except ValueError:
            raise fail(name, f"must be an integer, got {cell!r}") from None
    if kind == "number":
        try:
            v = float(s) if not s.lstrip("-").isdigit() else int(s)
        except ValueError:
            raise fail(name, f"must be a number, got {cell!r}") from None
        if not math.isfinite(v):
            raise fail(name, f"must be a finite number, got {cell!r}")
        return v
    if kind == "boolean":
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise fail(name, f"must be true or false, got {cell!r}")
    if kind == "object":
        try:
            return json.loads(s)
        except ValueError:
            raise fail(name, f"must be a JSON object, got {cell!r}") from None
    return cell
