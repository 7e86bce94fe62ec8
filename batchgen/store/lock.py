"""One writer per output folder: the lock a run holds while it writes there."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from batchgen.core.errors import ExitCode, UserError
from batchgen.store.files import atomic_write_text, ensure_dir, open_nofollow

__all__ = ["lock_holder", "output_lock"]


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """One writer per output folder: a second run (an overlapping cron job) is refused, not merged."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        ensure_dir(out_dir / "images")
        fd = open_nofollow(out_dir / ".lock", os.O_RDWR | os.O_CREAT)
    except OSError as e:
        raise UserError(f"{out_dir}: output folder is not writable: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise UserError(
                    f"{out_dir}: another batchgen run is using this output folder; "
                    "wait for it to finish (this run changed nothing)",
                    ExitCode.ABORTED,
                ) from None
            raise
        try:
            atomic_write_text(out_dir / ".write-test", "ok")
            (out_dir / ".write-test").unlink()
        except OSError as e:
            raise UserError(f"{out_dir}: output folder is not writable: {e.strerror or e}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def lock_holder(out_dir: Path) -> int | None:
    """The pid of the run holding ``out_dir``'s lock now, or None; never takes or disturbs the lock.

    Probing with ``flock`` would, for an instant, make a starting run believe another one holds
    the folder: a status check from monitoring could then fail a cron run. The kernel's own table
    (``/proc/locks``) answers without touching the lock; where it is not readable, the answer is
    None (unknown).
    """
    try:
        st = os.stat(out_dir / ".lock", follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 9074 fe:00:2155473 0 EOF" ("->" marks a blocked waiter)
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            try:
                return int(parts[4])
            except ValueError:
                return None
    return None
