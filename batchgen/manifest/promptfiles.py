"""Prompts kept outside the manifest: ``.txt``, ``.jsonl`` or ``.csv`` files, one prompt per row.

Dataset builders keep prompts in whatever their other tools write; these readers turn each row into
the same mapping an inline item would be, with the row's line so that a mistake is reported as
``prompts.csv:17: seed: ...`` rather than somewhere in the manifest.

Rows end at ``\n`` (or ``\r\n``) and nowhere else: ``str.splitlines`` would also split at a form
feed, U+0085 or U+2028, and U+2028 is valid inside a JSON string. A row that cannot be read is
reported and skipped, so one run lists the bad rows of a file, not the first one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchgen.models import ModelSpec

from .readfile import Unreadable, read_capped

__all__ = ["MAX_PROMPTS_FILE_BYTES", "SUFFIXES", "read_rows"]

MAX_PROMPTS_FILE_BYTES = 512 * 1024 * 1024
SUFFIXES = (".txt", ".jsonl", ".csv")

# (line, field or None, message) -> the exception for it
ErrorFactory = Callable[[int | None, str | None, str], Exception]
# records a bad row's exception; reading goes on with the next row
Note = Callable[[Exception], None]


def _raise(e: Exception) -> None:
    raise e


def read_rows(
    path: Path, spec: ModelSpec | None, fail: ErrorFactory, note: Note = _raise
) -> list[tuple[int, dict[str, Any]]]:
    """``(line, mapping)`` per prompt; the mapping has ``prompt`` and optionally ``id``, parameters.

    A mistake in the file as a whole is raised; a bad row goes to ``note`` and is left out.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise fail(None, None, f"unsupported prompts file type {suffix or '(none)'!r} (use .txt, .jsonl or .csv)")
    try:
        data = read_capped(path, MAX_PROMPTS_FILE_BYTES, "prompts file")
    except Unreadable as e:
        raise fail(None, None, e.message) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise fail(data[: e.start].count(b"\n") + 1, None, f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    del data
    bad = 0

    def noted(e: Exception) -> None:
        nonlocal bad
        bad += 1
        note(e)

    if suffix == ".txt":
        rows = _txt(text)
    elif suffix == ".jsonl":
        rows = _jsonl(text, fail, noted)
    else:
        rows = _csv(text, spec, fail, noted)
    if not rows and not bad:
        raise fail(None, None, "has no prompts")
    return rows


def _lines(text: str) -> list[str]:
    """Lines ended by ``\n`` or ``\r\n`` only."""
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    if "\r" in text:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines


def _txt(text: str) -> list[tuple[int, dict[str, Any]]]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    rows = []
    for n, line in enumerate(_lines(text), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            rows.append((n, {"prompt": s}))
    return rows


def _jsonl(text: str, fail: ErrorFactory, note: Note) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, line in enumerate(_lines(text), start=1):
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
        rows.append((n, obj))
    return rows


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _csv(text: str, spec: ModelSpec | None, fail: ErrorFactory, note: Note) -> list[tuple[int, dict[str, Any]]]:
    """A header row names the columns; empty cells mean 'not set'. Cells are typed by the model."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
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
    rows = []
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
        rows.append((line, row))
    return rows


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
