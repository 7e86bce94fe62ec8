"""The one path of every export: pick the format's writer, feed it each downloaded record, close it.

Options that a format cannot honour are refused here, before anything is written, rather than
dropped: a user who asked for image bytes in an image folder gets one line saying so, not an export
that silently differs from the request.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import assert_never

from batchgen.outputs.catalog import Catalog
from batchgen.outputs.export.base import Exporter, ExportError, Sample, make_row, param_columns
from batchgen.outputs.export.imagefolder import ImageFolderExporter
from batchgen.outputs.export.parquet import ParquetExporter
from batchgen.outputs.export.webdataset import WebDatasetExporter

__all__ = ["FORMATS", "Format", "export", "open_exporter"]


class Format(StrEnum):
    IMAGEFOLDER = "imagefolder"
    WEBDATASET = "webdataset"
    PARQUET = "parquet"


FORMATS = tuple(f.value for f in Format)


def open_exporter(
    fmt: Format | str,
    dest: str | os.PathLike[str],
    *,
    shard_size: int = 1000,
    with_images: bool = False,
    overwrite: bool = False,
) -> Exporter:
    """The writer for ``fmt`` at ``dest``, its destination prepared; ExportError for what cannot be done."""
    try:
        f = Format(fmt)
    except ValueError:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})") from None
    if with_images and f is not Format.PARQUET:
        raise ExportError(f"--with-images applies to --format parquet only; {f} already stores every image as a file")
    match f:
        case Format.IMAGEFOLDER:
            return ImageFolderExporter(Path(dest), overwrite=overwrite)
        case Format.WEBDATASET:
            return WebDatasetExporter(Path(dest), shard_size=shard_size, overwrite=overwrite)
        case Format.PARQUET:
            return ParquetExporter(dest, with_images=with_images, overwrite=overwrite)
        case _:
            assert_never(f)


def export(
    cat: Catalog,
    fmt: Format | str,
    dest: str | os.PathLike[str],
    *,
    shard_size: int = 1000,
    with_images: bool = False,
    overwrite: bool = False,
) -> tuple[int, str]:
    """Write the export of every image on disk; returns (rows written, where to point the library at)."""
    recs = cat.downloaded()
    writer = open_exporter(fmt, dest, shard_size=shard_size, with_images=with_images, overwrite=overwrite)
    columns = param_columns(recs)
    try:
        for r in recs:
            image = cat.image(r)  # inside the folder and as recorded: ``downloaded`` checked both
            assert image is not None
            writer.write(Sample(r.id, make_row(r, columns), image, int(r.downloaded_ts or 0)))
    except BaseException:
        writer.abort()
        raise
    return len(recs), writer.close()
