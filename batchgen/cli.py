"""Command line: argument parsing, progress display and exit codes; no business logic."""

from __future__ import annotations

import argparse
import sys

from batchgen import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchgen", description=__doc__)
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("sandbox", help="serve the offline Segmind emulator")
    from batchgen.sandbox.cli import add_sandbox_arguments

    add_sandbox_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        from batchgen.sandbox.cli import serve_from_args

        return serve_from_args(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
