"""Output files that outlive the emulator process: what a later emulator needs to serve them again.

The real service keeps an output file for days behind a URL that needs no key; a worker records the
URL and may fetch it again much later (a deleted or damaged image). An in-memory emulator forgets
its files when it stops, so a rerun of ``batchgen run --sandbox`` could never fetch a recorded URL.
With a store folder, each accepted job that will complete leaves a tiny record (prompt, seed, size,
when it is done); the images are deterministic, so a record is enough to serve the same bytes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["FileRecord", "FileStore"]

_NAME = re.compile(r"[0-9a-f-]{36}\.png")


@dataclass(frozen=True)
class FileRecord:
    prompt: str
    seed: int | None
    width: int
    height: int
    done_wall: float  # when the job completes (wall clock: it must mean the same to the next process)
    gone_wall: float  # when the file stops being served (the file retention)


class FileStore:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def remember(self, file_name: str, record: FileRecord) -> None:
        """Write the record atomically; a crash leaves the old state or the new, never half a file."""
        tmp = self.folder / f".{file_name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        os.replace(tmp, self.folder / f"{file_name}.json")

    def lookup(self, file_name: str) -> FileRecord | None:
        """The record of a file an earlier emulator served, or None (unknown, unreadable, odd name)."""
        if not _NAME.fullmatch(file_name):
            return None
        try:
            raw = json.loads((self.folder / f"{file_name}.json").read_text(encoding="utf-8"))
            return FileRecord(**raw)
        except (OSError, ValueError, TypeError):
            return None
