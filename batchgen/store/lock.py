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
def output_lock(out_dir: Path, name: str = ".lock", *, shared: bool = False, holder: str | None = None) -> Iterator[None]:
    """One writer per output folder: a second run (an overlapping cron job) is refused, not merged.

    ``name``: the lock file (a shard's own lock is ``.lock.shard-…``, see ``store.shards``);
    ``shared``: held beside other shared holders, refused while anyone holds it exclusively;
    ``holder``: what the refusal says is running (``shard 3 of 8``) when it is not the whole folder.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        ensure_dir(out_dir / "images")
        fd = open_nofollow(out_dir / name, os.O_RDWR | os.O_CREAT)
    except OSError as e:
        raise UserError(f"{out_dir}: output folder is not writable: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                using = "using this output folder" if holder is None else f"running {holder} in this output folder"
                raise UserError(
                    f"{out_dir}: another batchgen run is {using}; "
                    "wait for it to finish (this run changed nothing)",
                    ExitCode.ABORTED,
                ) from None
            raise
        if not shared:  # shared holders test under their own exclusive lock: one name per writer
            probe = out_dir / (".write-test" + name.removeprefix(".lock"))
            try:
                atomic_write_text(probe, "ok")
                probe.unlink()
            except OSError as e:
                raise UserError(f"{out_dir}: output folder is not writable: {e.strerror or e}") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def lock_holder(out_dir: Path, name: str = ".lock") -> int | None:
    """The pid of the run holding ``out_dir``'s lock now, or None; never takes or disturbs the lock.

    Probing with ``flock`` would, for an instant, make a starting run believe another one holds
    the folder: a status check from monitoring could then fail a cron run. The kernel's own table
    (``/proc/locks``) answers without touching the lock; where it is not readable, the answer is
    None (unknown).
    """
    try:
        st = os.stat(out_dir / name, follow_symlinks=False)
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
