"""The one exception tree and the exit codes of the command line.

Every error a user can cause or the service can bring about derives from ``BatchgenError`` and
carries the exit code the command ends with, so the command line maps them in one place instead of
command by command. Anything else reaching the top is a bug of ours (exit 70).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["BatchgenError", "ExitCode", "UserError"]


class ExitCode(IntEnum):
    """The documented exit codes (README "Exit codes"); scripts and cron jobs rely on them."""

    OK = 0
    FAILED_ITEMS = 1  # the run finished; some items failed
    BAD_INPUT = 2  # manifest, flags, missing key, unwritable folder: nothing was sent
    ABORTED = 3  # stopped by the service or a limit; state saved
    INTERNAL = 70  # a bug of ours
    INTERRUPTED = 130  # SIGINT / SIGTERM; state saved


class BatchgenError(Exception):
    """Ends a command with one line and ``code``; never a traceback."""

    code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = ExitCode(code)


class UserError(BatchgenError):
    """A mistake in what the user gave us, or a condition they must fix (exit 2 unless told)."""
