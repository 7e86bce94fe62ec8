"""Where a ledger ``file`` may point, and whether what is there is still the image the ledger recorded.

A ledger is a text file anyone can edit, copy from elsewhere or plant; its ``file`` values are paths
that the plan, the exports, the report and status open. Every one of them goes through
``OutputFiles``, so a name that leaves the output folder (``../x.png``, ``/etc/passwd``, a symlink
pointing out of it) is never read, copied or embedded anywhere.

Cost, for a resume of 100k images: every file is stat'ed (size against the ledger's ``bytes``);
its content is hashed against the ledger's ``sha256`` only when its modification time is later than
the ``downloaded`` line that recorded it, i.e. when something wrote it after batchgen did. A file
copied without its times (``cp -r`` rather than ``cp -a``) is hashed on every resume; one changed
in place with its size and time kept (bit rot, ``touch -d``) is not noticed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from enum import StrEnum
from pathlib import Path

__all__ = ["MTIME_SLACK_S", "FileState", "OutputFiles"]

# A file's mtime is taken before its ledger line's timestamp (written after the rename, to the
# millisecond); the slack covers coarse file-system clocks (FAT keeps 2 s).
MTIME_SLACK_S = 2.0


class FileState(StrEnum):
    """What a ledger ``file`` turned out to be."""

    INTACT = "intact"  # inside the folder, a regular file, the recorded size (and hash, when checked)
    MISSING = "missing"  # absent, or not a regular file
    REFUSED = "refused"  # names a place outside the output folder: never opened
    DAMAGED = "damaged"  # truncated, grown or rewritten: its size or sha256 differs from the ledger's


class OutputFiles:
    """Resolves ledger ``file`` values against one output folder and checks what they point at.

    Built for 100k files per resume: plain string checks, one ``realpath`` per parent folder
    (cached), one ``lstat`` per file, and a ``Path`` only for a caller that asks for one.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._base = os.fspath(out_dir)
        self._root = os.path.realpath(out_dir)
        self._dirs: dict[str, bool] = {}  # parent folder (as written) -> whether it stays inside
        self._prefix = os.path.join(self._base, "")

    def locate(self, file: object) -> Path | None:
        """The path a ledger ``file`` names inside the folder, or None when it would leave the folder.

        Refused: anything but a non-empty relative name, a ``..`` part, a NUL, or a parent folder
        that is (or passes through) a symlink out. A final symlink is judged by ``check``.
        """
        where = self._locate(file)
        return None if where is None else Path(where)

    def state(
        self, file: object, *, size: object = None, sha256: object = None, written_ts: float | None = None
    ) -> FileState:
        """What ``file`` is now, given what the ledger recorded (see ``check``)."""
        return self._examine(file, size, sha256, written_ts)[0]

    def check(
        self, file: object, *, size: object = None, sha256: object = None, written_ts: float | None = None
    ) -> tuple[FileState, Path | None]:
        """What ``file`` is now, given what the ledger recorded; the path is given only when INTACT.

        ``written_ts``: epoch seconds of the ledger line that recorded the file; a file modified
        later than that (or with no time to compare) is hashed when a ``sha256`` is known.
        """
        found, where = self._examine(file, size, sha256, written_ts)
        return found, None if where is None else Path(where)

    def _locate(self, file: object) -> str | None:
        if not isinstance(file, str) or not file or "\x00" in file or file.startswith("/"):
            return None
        if ".." in file and ".." in file.split("/"):  # split only a name that might hold a ".." part
            return None
        parent, _, last = file.rpartition("/")
        if last in ("", "."):
            return None
        inside = self._dirs.get(parent)
        if inside is None:
            inside = self._dirs[parent] = self._inside(os.path.realpath(os.path.join(self._base, parent)))
        return self._prefix + file if inside else None  # os.path.join(base, file), for a relative file

    def _examine(
        self, file: object, size: object, sha256: object, written_ts: float | None
    ) -> tuple[FileState, str | None]:
        where = self._locate(file)
        if where is None:
            return FileState.REFUSED, None
        try:
            st = os.lstat(where)
            if stat.S_ISLNK(st.st_mode):
                if not self._inside(os.path.realpath(where)):
                    return FileState.REFUSED, None
                st = os.stat(where)
        except OSError:
            return FileState.MISSING, None
        if not stat.S_ISREG(st.st_mode):
            return FileState.MISSING, None
        if isinstance(size, int) and not isinstance(size, bool) and st.st_size != size:
            return FileState.DAMAGED, None
        touched = written_ts is None or st.st_mtime > written_ts + MTIME_SLACK_S
        if isinstance(sha256, str) and sha256 and touched:
            try:
                with open(where, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return FileState.MISSING, None
            if digest != sha256.lower():
                return FileState.DAMAGED, None
        return FileState.INTACT, where

    def _inside(self, real: str) -> bool:
        return real == self._root or real.startswith(self._root.rstrip(os.sep) + os.sep)
