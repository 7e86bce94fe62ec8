"""Where the command line writes: results and notes on stdout, errors on stderr.

One place, so a closed stdout (``batchgen plan ... | head -1``) is handled the same for every
command, and the README's promise about which stream carries what holds.
"""

from __future__ import annotations

import os
import sys

__all__ = ["err", "say", "stdout_gone"]


def err(message: str) -> None:
    """Each line of ``message`` (a manifest's mistakes are one a line) as its own ``batchgen:`` line."""
    sys.stderr.write("".join(f"batchgen: {line}\n" for line in message.split("\n")))
    sys.stderr.flush()


def say(message: str) -> None:
    try:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()


def stdout_gone() -> None:
    """The reader of stdout left (``batchgen plan ... | head -1``): go on quietly, as Unix tools do.

    Later writes, and the interpreter's last flush, go to /dev/null instead of raising again; a
    run keeps working, since its results are in the ledger, not on stdout.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
