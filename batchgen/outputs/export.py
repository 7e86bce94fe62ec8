"""Exports of an output folder in the layouts training pipelines already read.

Only items whose image is on disk are exported, each with the parameters it was submitted with (as
recorded in the ledger), so a dataset row says exactly how its image was made. Writing needs no
third-party library except Parquet (pyarrow); reading the results is the libraries' job.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchgen.core.errors import BatchgenError
from batchgen.outputs.catalog import Catalog, Record

__all__ = ["FORMATS", "ExportError", "MissingLibrary", "export", "rows"]

FORMATS = ("imagefolder", "webdataset", "parquet")
MARKER = ".batchgen-export"
FACT_COLUMNS = ("request_id", "sha256", "bytes", "width", "height", "inference_time", "latency_s", "cost_usd")


class ExportError(BatchgenError):
    """A user-level problem with the destination; one line, exit 2."""


class MissingLibrary(ExportError):
    pass


def _jsonable(v: Any) -> Any:
    # Objects (color_palette) differ in shape from row to row; as JSON text one column type fits all.
    return json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, dict | list) else v


def rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One flat row per record: id, file_name, prompt, every parameter seen, then the ledger's facts."""
    recs = list(records)
    names = sorted({k for r in recs for k in (r.params or {})} - {"prompt"})
    out = []
    for r in recs:
        params = r.params or {}
        row: dict[str, Any] = {"file_name": Path(r.file or "").name, "id": r.id, "prompt": params.get("prompt")}
        for k in names:
            row[k] = _jsonable(params.get(k))
        for k in FACT_COLUMNS:
            row[k] = getattr(r, k)
        out.append(row)
    return out


def _prepare_dir(dest: Path, overwrite: bool) -> None:
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


def export(cat: Catalog, fmt: str, dest: Path, *, shard_size: int = 1000, with_images: bool = False,
           overwrite: bool = False) -> tuple[int, str]:
    """Write the export; returns (rows written, where to point the library at)."""
    recs = cat.downloaded()
    if fmt == "imagefolder":
        return len(recs), _imagefolder(cat, recs, dest, overwrite)
    if fmt == "webdataset":
        return len(recs), _webdataset(cat, recs, dest, shard_size, overwrite)
    if fmt == "parquet":
        return len(recs), _parquet(cat, recs, dest, with_images, overwrite)
    raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def _imagefolder(cat: Catalog, recs: list[Record], dest: Path, overwrite: bool) -> str:
    """Hugging Face image-folder layout: images next to a metadata.jsonl keyed by ``file_name``."""
    _prepare_dir(dest, overwrite)
    with open(dest / "metadata.jsonl", "w", encoding="utf-8") as f:
        for r, row in zip(recs, rows(recs), strict=True):
            shutil.copyfile(cat.out_dir / (r.file or ""), dest / row["file_name"])
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(dest)


def _wds_key(item_id: str) -> str:
    # WebDataset splits a member name at its first dot; '~' is never part of an id, so keys stay unique.
    return item_id.replace(".", "~")


def _webdataset(cat: Catalog, recs: list[Record], dest: Path, shard_size: int, overwrite: bool) -> str:
    """Tar shards of ``{key}.<ext>`` + ``{key}.json``; returns the brace pattern the loader expands."""
    if shard_size < 1:
        raise ExportError("--shard-size must be at least 1")
    _prepare_dir(dest, overwrite)
    all_rows = rows(recs)
    shards = max(1, -(-len(recs) // shard_size))
    for s in range(shards):
        with tarfile.open(dest / f"shard-{s:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for r, row in zip(recs[s * shard_size : (s + 1) * shard_size],
                              all_rows[s * shard_size : (s + 1) * shard_size], strict=True):
                key = _wds_key(r.id)
                ext = Path(r.file or "").suffix.lstrip(".") or "png"
                mtime = int(r.downloaded_ts or 0)
                _add(tar, f"{key}.{ext}", (cat.out_dir / (r.file or "")).read_bytes(), mtime)
                _add(tar, f"{key}.json", json.dumps(row, ensure_ascii=False).encode("utf-8"), mtime)
    last = shards - 1
    return str(dest / ("shard-000000.tar" if last == 0 else f"shard-{{000000..{last:06d}}}.tar"))


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def _parquet(cat: Catalog, recs: list[Record], dest: Path, with_images: bool, overwrite: bool) -> str:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingLibrary(
            "export --format parquet needs pyarrow: pip install 'batchgen[datasets]'"
        ) from None
    target = dest / "metadata.parquet" if dest.is_dir() or str(dest).endswith(os.sep) else dest
    if target.exists() and not overwrite:
        raise ExportError(f"{target}: exists (pass --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    table_rows = rows(recs)
    if with_images:
        for r, row in zip(recs, table_rows, strict=True):
            row["image"] = (cat.out_dir / (r.file or "")).read_bytes()
    table = pa.Table.from_pylist(table_rows) if table_rows else pa.table({"file_name": pa.array([], pa.string())})
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    return str(target)
