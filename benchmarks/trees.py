"""The package trees a benchmark runs, byte-compiled first as an installed package is.

Why: ``pip install`` of a wheel compiles every module, so a user's command reads bytecode; an
editable checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as some CI machines and containers set)
compiles batchgen from source on every command, about 0.1 s that no installed copy pays. Both
trees of a before/after are compiled alike.
"""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def precompile(*trees: Path | None) -> None:
    """Write ``__pycache__`` for the batchgen package of each tree (None: this checkout)."""
    for tree in trees:
        package = (tree or ROOT) / "batchgen"
        if package.is_dir():
            compileall.compile_dir(str(package), quiet=1)
