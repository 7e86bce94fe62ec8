"""What every export format shares: the row a dataset gets per image, the sample handed to a writer,
the writer interface, and the rules for the destination folder.

The interface follows img2dataset's sample writers: a writer is opened on its destination, receives
one sample at a time through ``write`` and finishes in ``close``, so a new format (shards in object
storage, say) is one class and the driver that feeds it stays the same.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.core.errors import UserError
from batchgen.outputs.catalog import Record

__all__ = [
    "FACT_COLUMNS",
    "MARKER",
    "ExportError",
    "Exporter",
    "MissingLibrary",
    "Sample",
    "make_row",
    "param_columns",
    "prepare_dir",
    "rows",
]

MARKER = ".batchgen-export"
FACT_COLUMNS = ("request_id", "sha256", "bytes", "width", "height", "inference_time", "latency_s", "cost_usd")


class ExportError(UserError):
    """A user-level problem with the destination or the options; one line, exit 2."""


class MissingLibrary(ExportError):
    pass


@dataclass(frozen=True)
class Sample:
    """One downloaded image and its dataset row, as a writer receives it."""

    id: str
    row: dict[str, Any]  # file_name, id, prompt, every parameter seen, then the ledger's facts
    image: Path  # the image file inside the output folder
    mtime: int  # when it was downloaded (seconds), for archive members


class Exporter(ABC):
    """A format's writer. Opening it prepares the destination; ``close`` says where to load from."""

    @abstractmethod
    def write(self, sample: Sample) -> None:
        """Add one sample; samples arrive in the catalog's order."""

    @abstractmethod
    def close(self) -> str:
        """Finish the export; returns the path (or pattern) to point the reading library at."""

    def abort(self) -> None:  # noqa: B027 - most writers have nothing to undo
        """Release what is open after a failed ``write``; the destination may stay half written."""


def _jsonable(v: Any) -> Any:
    # Objects (color_palette) differ in shape from row to row; as JSON text one column type fits all.
    return json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, dict | list) else v


def param_columns(records: Iterable[Record]) -> list[str]:
    """Every parameter any record was submitted with, so every row has the same columns."""
    return sorted({k for r in records for k in (r.params or {})} - {"prompt"})


def make_row(r: Record, columns: list[str]) -> dict[str, Any]:
    """id, file_name, prompt, the parameters named by ``columns`` (None where unset), the facts."""
    params = r.params or {}
    row: dict[str, Any] = {"file_name": Path(r.file or "").name, "id": r.id, "prompt": params.get("prompt")}
    for k in columns:
        row[k] = _jsonable(params.get(k))
    for k in FACT_COLUMNS:
        row[k] = getattr(r, k)
    return row


def rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One flat row per record: id, file_name, prompt, every parameter seen, then the ledger's facts."""
    recs = list(records)
    columns = param_columns(recs)
    return [make_row(r, columns) for r in recs]


def prepare_dir(dest: Path, overwrite: bool) -> None:
    """An empty folder at ``dest``, marked as ours; only an earlier export of ours is ever deleted."""
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest}: exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not overwrite:
            raise ExportError(f"{dest}: folder is not empty (pass --overwrite to replace an earlier export)")
        if not (dest / MARKER).exists():
            raise ExportError(f"{dest}: not an earlier batchgen export; refusing to delete it")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MARKER).write_text("written by batchgen export; --overwrite may delete this folder\n")
