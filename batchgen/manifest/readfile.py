"""Reading a manifest or a prompts file: a regular file, never more than a cap, never blocking.

A path given by the user may name anything: a FIFO (``open`` would wait forever for a writer),
``/dev/zero`` (endless), a directory, a file of a ``/proc``-like system that reports size 0. Only a
regular file is read, the cap is counted while reading (a reported size can be wrong or grow), and
the open cannot block even if a FIFO is swapped in after the check.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHUNK", "Unreadable", "chunks", "open_regular", "read_capped"]

CHUNK = 1 << 20


class Unreadable(Exception):
    """Why a file cannot be read, in words for the user (the caller names the file)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def _check(mode: int, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise Unreadable(f"is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise Unreadable(f"not a regular file ({_kind(mode)}); give a {what}")


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "no such file"
    if e.errno == errno.EISDIR:
        return "is a directory"
    return f"cannot read: {e.strerror or e}"


def open_regular(path: Path, cap: int, what: str, too_large_hint: str = "") -> int:
    """A descriptor of the regular file ``path``, opened without blocking; Unreadable when it is not
    one or reports more than ``cap`` bytes. The caller reads it through ``chunks`` and closes it."""
    hint = f"; {too_large_hint}" if too_large_hint else ""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise Unreadable(_os_reason(e) if isinstance(e, OSError) else "not a valid path") from None
    _check(st.st_mode, what)
    if st.st_size > cap:
        raise Unreadable(f"file is too large ({st.st_size} bytes, limit {cap}){hint}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise Unreadable(_os_reason(e)) from None
    try:
        _check(os.fstat(fd).st_mode, what)  # the same file as checked, not a FIFO swapped in since
    except BaseException:
        os.close(fd)
        raise
    return fd


def chunks(fd: int, cap: int, too_large_hint: str = "") -> Iterator[bytes]:
    """The bytes of ``fd`` from where it stands, CHUNK at a time; Unreadable once past ``cap`` in all."""
    hint = f"; {too_large_hint}" if too_large_hint else ""
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(CHUNK, cap + 1 - total))
        except OSError as e:
            raise Unreadable(_os_reason(e)) from None
        if not chunk:
            return
        total += len(chunk)
        if total > cap:
            raise Unreadable(f"file is too large (over the limit of {cap} bytes){hint}")
        yield chunk


def read_capped(path: Path, cap: int, what: str, too_large_hint: str = "") -> bytearray:
    """The bytes of the regular file ``path``; Unreadable when it is not one or holds over ``cap``.

    ``what`` names the file in messages ("manifest file"); ``too_large_hint`` says what to do.
    """
    fd = open_regular(path, cap, what, too_large_hint)
    try:
        data = bytearray()
        for chunk in chunks(fd, cap, too_large_hint):
            data += chunk
        return data
    finally:
        os.close(fd)
