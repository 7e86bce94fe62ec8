"""One writer per output folder: the lock a run holds while it writes there."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from batchgen.core.errors import ExitCode, UserError

__all__ = ["output_lock"]


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """One writer per output folder: a second run (an overlapping cron job) is refused, not merged."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "images").mkdir(exist_ok=True)
        fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
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
        probe = out_dir / ".write-test"
        try:
            with open(probe, "w") as f:
                f.write("ok")
            probe.unlink()
        except OSError as e:
            raise UserError(f"{out_dir}: output folder is not writable: {e.strerror or e}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
