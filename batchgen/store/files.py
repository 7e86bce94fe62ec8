"""Writing inside an output folder without ever following a planted symbolic link.

An output folder may be shared (a team drive, a CI workspace). A link planted at ``.lock``,
``ledger.jsonl``, ``images/`` or a temporary name would make a run truncate or append to whatever
it points at. Every write a run or a command makes in the folder goes through here, and a link in
its way ends the command with exit 2 naming the path. (The folder itself may be a link: that is
the user's own choice of where output goes.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from batchgen.core.errors import UserError

__all__ = ["atomic_write_text", "ensure_dir", "open_nofollow", "refuse_link"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _planted(path: Path) -> UserError:
    return UserError(f"{path}: is a symbolic link; batchgen never writes through one (remove it)")


def refuse_link(path: Path) -> None:
    """Raise when ``path`` is a symbolic link (dangling or not)."""
    if path.is_symlink():
        raise _planted(path)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that fails, as a user error, on a link at ``path`` instead of following it."""
    try:
        return os.open(path, flags | _NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EEXIST and path.is_symlink()):
            raise _planted(path) from None
        raise


def ensure_dir(path: Path) -> None:
    """``mkdir -p`` for a folder the run writes into; a link in its place is refused."""
    refuse_link(path)
    path.mkdir(parents=True, exist_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: readers see the old file or the new, never half.

    The temporary name is unpredictable and created exclusively, so nothing planted can be
    written through; a link at ``path`` itself is replaced, not followed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
