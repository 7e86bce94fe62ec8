"""Where a run's output goes: the one storage interface, and the local folder behind it.

A run writes two kinds of thing: images (each stored whole and verified, or not at all) and the
ledger. The engine stages every image in a local working folder (``work_dir``: the output folder
itself when it is local) and hands the verified temporary file to ``commit_image``; the plan and
the supersede step ask ``files()`` what a ledger ``file`` still is, and ``move_aside`` to keep an
earlier image. ``LocalStorage`` is what batchgen always did (fsync, rename, folder fsync); the
object-store implementation is ``store.objstore.ObjectStorage``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from batchgen.store.filecheck import FileState, OutputFiles

__all__ = ["FileChecks", "LocalStorage", "Storage", "commit_files", "durable_rename", "fsync_dir", "superseded_rel"]


@runtime_checkable
class FileChecks(Protocol):
    """What a ledger ``file`` is now (see ``store.filecheck.OutputFiles``, whose signature this is)."""

    def state(
        self, file: object, *, size: object = None, sha256: object = None, written_ts: float | None = None
    ) -> FileState: ...

    def check(
        self, file: object, *, size: object = None, sha256: object = None, written_ts: float | None = None
    ) -> tuple[FileState, Path | None]: ...


@runtime_checkable
class Storage(Protocol):
    """An output: a local folder or an object-store prefix."""

    @property
    def display(self) -> str:
        """How messages name the output (the folder, or the ``s3://`` URL)."""
        ...

    @property
    def work_dir(self) -> Path:
        """The local folder the run stages images in; ledger ``file`` values are relative to it."""
        ...

    def files(self) -> FileChecks:
        """File checks for this output, built once per plan or command."""
        ...

    def commit_image(self, f: Any, tmp: Path, final: Path) -> None:
        """Store the complete, verified file ``tmp`` (open as ``f``, closed here) under ``final``
        (a path in ``work_dir``). Blocking; run off the event loop. Raises OSError."""
        ...

    def move_aside(self, file: str, item_id: str, params_sha: str) -> str | None:
        """Rename the intact image ``file`` to a free ``<id>~superseded-<sha>`` name beside it and
        return that name (relative, as ledger ``file`` values are); None when ``file`` is not there
        intact. Raises OSError when it cannot be moved."""
        ...


def superseded_rel(file: str, item_id: str, params_sha: str, taken: Any) -> str:
    """A free name beside ``file`` for an earlier image of ``item_id``; ``taken(rel)`` says whether a
    name is in use. ``~`` never appears in an id, so the name is never another item's."""
    parent, _, last = file.rpartition("/")
    suffix = last[last.rfind("."):] if "." in last else ""
    base = f"{item_id}~superseded-{params_sha[:8]}"
    for n in itertools.count(1):
        name = f"{base}{'' if n == 1 else f'-{n}'}{suffix}"
        rel = f"{parent}/{name}" if parent else name
        if not taken(rel):
            return rel
    raise AssertionError("unreachable")


class LocalStorage:
    """A folder on a local (or shared) filesystem: the output folder is the working folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    @property
    def display(self) -> str:
        return str(self.out_dir)

    @property
    def work_dir(self) -> Path:
        return self.out_dir

    def files(self) -> OutputFiles:
        return OutputFiles(self.out_dir)

    def commit_image(self, f: Any, tmp: Path, final: Path) -> None:
        durable_rename(f, tmp, final)

    def move_aside(self, file: str, item_id: str, params_sha: str) -> str | None:
        found, path = OutputFiles(self.out_dir).check(file)
        if found is not FileState.INTACT or path is None:
            return None
        target = superseded_rel(file, item_id, params_sha, lambda rel: os.path.lexists(self.out_dir / rel))
        os.rename(path, self.out_dir / target)
        return target


def commit_files(files: Sequence[tuple[Any, Path, Path]]) -> list[OSError | None]:
    """For each ``(open file, temporary path, final path)``: fsync the bytes, rename, close; then
    fsync each folder once. A file under its final name is complete. Blocking. One file's failure
    is its own (its entry in the result), and the others are still stored."""
    results: list[OSError | None] = []
    folders: dict[Path, None] = {}
    for f, tmp, final in files:
        error: OSError | None = None
        try:
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, final)  # before the close drops the lock: no sweep can take it mid-rename
            folders[final.parent] = None
        except OSError as e:
            error = e
        try:
            f.close()  # after a failed flush it flushes again, and fails again: the first error stands
        except OSError as e:
            error = error or e
        results.append(error)
    for folder in folders:
        fsync_dir(folder)
    return results


def durable_rename(f: Any, tmp: Path, final: Path) -> None:
    """``commit_files`` of one file; raises its OSError."""
    (error,) = commit_files([(f, tmp, final)])
    if error is not None:
        raise error


def fsync_dir(path: Path) -> None:
    """Makes a rename (or a new entry) in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
