"""One Parquet table of every row, optionally with the image bytes as an ``image`` column.

The column types are inferred from all rows at once (as a single ``Table.from_pylist`` would), then
the table is written in row groups, reading image bytes one group at a time: a 10,000-image export
with ``--with-images`` holds one group of images in memory, not all of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchgen.outputs.export.base import Exporter, ExportError, MissingLibrary, Sample

__all__ = ["ParquetExporter", "parquet_target"]

ROWS_PER_GROUP = 256
TABLE_IN_FOLDER = "metadata.parquet"


def parquet_target(dest: str | os.PathLike[str]) -> Path:
    """The file to write for ``--to DEST``, decided from DEST alone so a new path means what it says.

    A DEST that ends with a slash or is an existing folder is a folder, and so is any DEST that does
    not end in ``.parquet``: the table goes to ``DEST/metadata.parquet``. Otherwise DEST is the file.
    """
    raw = os.fspath(dest)
    path = Path(raw)
    if raw.endswith(("/", os.sep)) or path.is_dir() or path.suffix.lower() != ".parquet":
        return path / TABLE_IN_FOLDER
    return path


class ParquetExporter(Exporter):
    def __init__(self, dest: str | os.PathLike[str], *, with_images: bool = False, overwrite: bool = False) -> None:
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise MissingLibrary("export --format parquet needs pyarrow: pip install 'batchgen[datasets]'") from None
        self.target = parquet_target(dest)
        self.with_images = with_images
        if self.target.exists() and not overwrite:
            raise ExportError(f"{self.target}: exists (pass --overwrite to replace it)")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self._images: list[Path] = []
        self._tmp = self.target.with_name(self.target.name + ".tmp")

    def write(self, sample: Sample) -> None:
        self._rows.append(sample.row)
        self._images.append(sample.image)

    def close(self) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._rows:
            schema = pa.Table.from_pylist(self._rows).schema
            if self.with_images:
                schema = schema.append(pa.field("image", pa.binary()))
        else:
            schema = pa.schema([pa.field("file_name", pa.string())])
        try:
            with pq.ParquetWriter(self._tmp, schema) as writer:
                for start in range(0, len(self._rows), ROWS_PER_GROUP):
                    group = self._rows[start : start + ROWS_PER_GROUP]
                    if self.with_images:
                        paths = self._images[start : start + ROWS_PER_GROUP]
                        group = [{**row, "image": p.read_bytes()} for row, p in zip(group, paths, strict=True)]
                    writer.write_table(pa.Table.from_pylist(group, schema=schema))
            os.replace(self._tmp, self.target)
        except BaseException:
            self.abort()
            raise
        return str(self.target)

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)
