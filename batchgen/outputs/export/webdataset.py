"""WebDataset tar shards: ``DEST/shard-000000.tar``, ... each sample ``{key}.<ext>`` + ``{key}.json``."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from batchgen.outputs.export.base import Exporter, ExportError, Sample, prepare_dir

__all__ = ["WebDatasetExporter", "wds_key"]


def wds_key(item_id: str) -> str:
    """WebDataset splits a member name at its first dot; '~' is never part of an id, so keys stay unique."""
    return item_id.replace(".", "~")


class WebDatasetExporter(Exporter):
    def __init__(self, dest: Path, *, shard_size: int = 1000, overwrite: bool = False) -> None:
        if shard_size < 1:
            raise ExportError("--shard-size must be at least 1")
        prepare_dir(dest, overwrite)
        self.dest, self.shard_size = dest, shard_size
        self._tar: tarfile.TarFile | None = None
        self._shards = 0  # shards opened so far
        self._in_shard = 0  # samples in the open shard

    def _next_shard(self) -> tarfile.TarFile:
        if self._tar is not None:
            self._tar.close()
        # PAX, not USTAR: a 100-character id makes a 105-character member name, past USTAR's limit;
        # members whose names fit get the same plain ustar header either way.
        self._tar = tarfile.open(self.dest / f"shard-{self._shards:06d}.tar", "w", format=tarfile.PAX_FORMAT)
        self._shards += 1
        self._in_shard = 0
        return self._tar

    def write(self, sample: Sample) -> None:
        tar = self._tar if self._tar is not None and self._in_shard < self.shard_size else self._next_shard()
        key = wds_key(sample.id)
        ext = Path(sample.row["file_name"]).suffix.lstrip(".") or "png"
        _add(tar, f"{key}.{ext}", sample.image.read_bytes(), sample.mtime)
        _add(tar, f"{key}.json", json.dumps(sample.row, ensure_ascii=False).encode("utf-8"), sample.mtime)
        self._in_shard += 1

    def close(self) -> str:
        """Returns the brace pattern the loader expands (one empty shard for an empty export)."""
        tar = self._tar if self._tar is not None else self._next_shard()
        tar.close()
        last = self._shards - 1
        return str(self.dest / ("shard-000000.tar" if last == 0 else f"shard-{{000000..{last:06d}}}.tar"))

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))
