"""The command line: argument parsing, progress display and exit codes; no business logic."""

from batchgen.cli.commands import main

__all__ = ["main"]
