"""Allows ``python -m batchgen`` wherever the console script is not on PATH."""

import sys

try:
    from batchgen.cli import main
except ModuleNotFoundError as e:  # run from a checkout with an interpreter that lacks the dependencies
    sys.stderr.write(
        f"batchgen: missing dependency {e.name!r} for {sys.executable}; "
        "install the project first: pip install -e .  (or use .venv/bin/python)\n"
    )
    sys.exit(2)

sys.exit(main())
