"""``python -m batchgen`` from a checkout with the wrong interpreter says what is missing, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_dependency_is_one_line_and_exit_2() -> None:
    # sys.modules[name] = None makes the import fail as if the package were not installed.
    code = "import sys, runpy; sys.modules['anyio'] = None; sys.argv = ['batchgen', 'sandbox']; runpy.run_module('batchgen', run_name='__main__')"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing dependency 'anyio'" in lines[0]
