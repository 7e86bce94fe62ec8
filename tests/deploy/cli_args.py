"""Deployment files are checked against batchgen's own argument parser, not a copy of its flags.

A flag the parser does not know (renamed, removed, or not there yet) must fail the test with the
parser's own message and the command that carried it; argparse alone would only raise SystemExit(2).
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from batchgen.cli.commands import build_parser


def parse_cli(argv: list[str], where: str) -> argparse.Namespace:
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), (
        f"{where}: the command must be a list of strings (exec form), got {argv!r}"
    )
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit as exc:
        code = exc.code
    pytest.fail(f"{where}: batchgen's parser refuses {argv!r} (exit {code}):\n{err.getvalue().strip()}", pytrace=False)
