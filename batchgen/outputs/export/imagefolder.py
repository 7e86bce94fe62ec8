"""Hugging Face image-folder layout: ``DEST/train/<id>.png`` beside ``DEST/train/metadata.jsonl``.

The images sit in a ``train/`` folder because ``datasets`` infers splits from paths when it is given
a bare folder: with the files at the top, a name containing train, test, val, dev or eval (``a-steam-
train.png``, ``test-card.png``) was read as a split of its own and the rest, metadata included, was
dropped. A split folder is the layout the library documents, and it checks folder names before file
names, so every file in ``train/`` lands in the one ``train`` split whatever its name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from batchgen.outputs.export.base import Exporter, Sample, prepare_dir

__all__ = ["SPLIT", "ImageFolderExporter"]

SPLIT = "train"


class ImageFolderExporter(Exporter):
    def __init__(self, dest: Path, *, overwrite: bool = False) -> None:
        prepare_dir(dest, overwrite)
        self.dest = dest
        self.folder = dest / SPLIT
        self.folder.mkdir()
        self._meta = open(self.folder / "metadata.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, sample: Sample) -> None:
        shutil.copyfile(sample.image, self.folder / sample.row["file_name"])
        self._meta.write(json.dumps(sample.row, ensure_ascii=False) + "\n")

    def close(self) -> str:
        self._meta.close()
        return str(self.dest)

    def abort(self) -> None:
        self._meta.close()
