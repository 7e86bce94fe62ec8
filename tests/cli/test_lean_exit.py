"""A run or a resume imports no emulator, and leaves the process without a final walk of its state."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.cli import REPO

MANIFEST = "name: m\nmodel: ideogram-txt-2-img\nitems:\n  - a fox\n  - a hare\n"


def python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_only_the_sandbox_command_imports_the_emulator(tmp_path: Path) -> None:
    done = python("""
        import sys
        from batchgen.cli.commands import build_parser
        build_parser(["run", "m.yaml", "--out", "o"]).parse_args(["run", "m.yaml", "--out", "o"])
        build_parser(["plan", "m.yaml"])
        print("run:", "batchgen.sandbox" in sys.modules)
        args = build_parser(["sandbox", "--latency", "0.5"]).parse_args(["sandbox", "--latency", "0.5"])
        print("sandbox:", "batchgen.sandbox" in sys.modules, args.latency)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["run: False", "sandbox: True 0.5"]


def test_the_full_parser_still_knows_every_sandbox_flag() -> None:
    from batchgen.cli.commands import build_parser

    args = build_parser().parse_args(["sandbox", "--latency", "0.5", "--rpm", "5", "--rpm-scope", "all"])
    assert (args.latency, args.rpm, args.rpm_scope) == (0.5, 5, "all")


def test_the_process_entry_freezes_its_state_at_exit_and_keeps_its_output_and_code(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    done = python(f"""
        import atexit, gc, sys
        from batchgen.cli.commands import main
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, file=sys.stderr))
        code = main(["plan", {str(manifest)!r}, "--out", {str(out)!r}])
        print("in-process call froze:", gc.get_freeze_count() > 0, file=sys.stderr)
        sys.argv = ["batchgen", "plan", {str(manifest)!r}, "--out", {str(out)!r}]
        sys.exit(main() + 40 + code)
    """, tmp_path)
    assert done.returncode == 40, done.stderr
    assert "in-process call froze: False" in done.stderr
    assert "frozen at exit: True" in done.stderr
    # Both plans printed whole, in order, though the second process exit skipped the final collection.
    assert done.stdout.count("dry run: nothing was submitted") == 2, done.stdout
    assert done.stdout.rstrip().endswith("dry run: nothing was submitted")
