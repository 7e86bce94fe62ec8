"""Prompts kept outside the manifest: ``.txt``, ``.jsonl`` or ``.csv`` files, one prompt per row.

Dataset builders keep prompts in whatever their other tools write; these readers turn each row into
the same mapping an inline item would be, with the row's line so that a mistake is reported as
``prompts.csv:17: seed: ...`` rather than somewhere in the manifest.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchgen.models import ModelSpec

__all__ = ["MAX_PROMPTS_FILE_BYTES", "SUFFIXES", "read_rows"]

MAX_PROMPTS_FILE_BYTES = 512 * 1024 * 1024
SUFFIXES = (".txt", ".jsonl", ".csv")

# (line, field or None, message) -> exception to raise
ErrorFactory = Callable[[int | None, str | None, str], Exception]


def read_rows(path: Path, spec: ModelSpec | None, fail: ErrorFactory) -> list[tuple[int, dict[str, Any]]]:
    """``(line, mapping)`` per prompt; the mapping has ``prompt`` and optionally ``id``, parameters."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise fail(None, None, f"unsupported prompts file type {suffix or '(none)'!r} (use .txt, .jsonl or .csv)")
    try:
        size = path.stat().st_size
        if size > MAX_PROMPTS_FILE_BYTES:
            raise fail(None, None, f"file is too large ({size} bytes, limit {MAX_PROMPTS_FILE_BYTES})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail(None, None, "no such file") from None
    except IsADirectoryError:
        raise fail(None, None, "is a directory, not a prompts file") from None
    except OSError as e:
        raise fail(None, None, f"cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise fail(data[: e.start].count(b"\n") + 1, None, f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    if suffix == ".txt":
        rows = _txt(text)
    elif suffix == ".jsonl":
        rows = _jsonl(text, fail)
    else:
        rows = _csv(text, spec, fail)
    if not rows:
        raise fail(None, None, "has no prompts")
    return rows


def _txt(text: str) -> list[tuple[int, dict[str, Any]]]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            rows.append((n, {"prompt": s}))
    return rows


def _jsonl(text: str, fail: ErrorFactory) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except ValueError as e:
            raise fail(n, None, f"not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise fail(n, None, "each line must be a JSON object with a prompt")
        rows.append((n, obj))
    return rows


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _csv(text: str, spec: ModelSpec | None, fail: ErrorFactory) -> list[tuple[int, dict[str, Any]]]:
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
            raise fail(line, None, f"{len(cells)} cells but the header names {len(names)} columns")
        row: dict[str, Any] = {}
        for name, cell in zip(names, cells, strict=False):
            if cell.strip() == "":
                continue
            row[name] = _cell(name, cell, spec, lambda f, m, line=line: fail(line, f, m))
        rows.append((line, row))
    return rows


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
            return float(s) if not s.lstrip("-").isdigit() else int(s)
        except ValueError:
            raise fail(name, f"must be a number, got {cell!r}") from None
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
