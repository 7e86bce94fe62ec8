"""The summary JSON: exit meanings from ExitCode, and one ``error`` field with the reason of every exit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchgen.cli.commands import main
from batchgen.core.errors import ExitCode
from batchgen.outputs.summary import build_summary, exit_meaning

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_exit_code_has_its_own_meaning() -> None:
    meanings = {code: exit_meaning(code) for code in ExitCode}
    assert meanings == {
        ExitCode.OK: "ok",
        ExitCode.FAILED_ITEMS: "finished with failed items",
        ExitCode.BAD_INPUT: "bad input; nothing was sent",
        ExitCode.ABORTED: "aborted by the service or a limit; state saved",
        ExitCode.INTERNAL: "internal error",
        ExitCode.INTERRUPTED: "interrupted; state saved",
    }
    assert exit_meaning(99) == "internal error"


def _summary(code: int, *, error: str | None = None, reason: str | None = None,
             counts: dict[str, int] | None = None) -> dict:
    outcome = SimpleNamespace(reason=reason, counts=counts or {}, spent_usd=0.0) if counts is not None else None
    return build_summary(exit_code=code, manifest=Path("m.yaml"), out_dir=None, started=0.0, finished=1.0,
                         outcome=outcome, error=error)


@pytest.mark.parametrize(("code", "kw", "error"), [
    (0, {"counts": {"failed": 0}}, None),
    (1, {"counts": {"failed": 1, "failed_retryable": 1}}, "2 item(s) failed (failures_by_reason says why)"),
    (1, {"counts": {"failed": 0, "pending": 3}}, "3 item(s) left for the next run"),
    (2, {"error": "m.yaml:3: seed: must be between 100 and 999999, got 5"},
     "m.yaml:3: seed: must be between 100 and 999999, got 5"),
    (3, {"reason": "budget reached: --max-images 2 images submitted", "counts": {}},
     "budget reached: --max-images 2 images submitted"),
    (3, {"error": "out/x: another run holds this output folder"}, "out/x: another run holds this output folder"),
    (130, {"error": "interrupted"}, "interrupted"),
    (130, {}, "interrupted; state saved"),
    (70, {}, "internal error"),
])
def test_error_is_null_only_for_exit_0(code: int, kw: dict, error: str | None) -> None:
    s = _summary(code, **kw)
    assert s["exit_code"] == code and s["error"] == error
    assert s["reason"] == kw.get("reason")  # kept for readers of the older field


def test_abort_reason_lands_in_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A budget stop is an exit-3 abort from the run itself (not an exception): error carries it."""
    (tmp_path / "m.yaml").write_text(
        "name: abort\ndefaults:\n  resolution: RESOLUTION_640_1024\nitems:\n"
        + "".join(f"  - id: i{n}\n    prompt: picture {n}\n" for n in range(4))
    )
    summary = tmp_path / "s.json"
    code = main(["run", str(tmp_path / "m.yaml"), "--sandbox", "--out", str(tmp_path / "out"), "--no-progress",
                 "--max-images", "2", "--summary-json", str(summary)])
    assert code == 3
    s = json.loads(summary.read_text())
    assert s["exit_code"] == 3 and s["exit_meaning"] == "aborted by the service or a limit; state saved"
    assert s["error"] == s["reason"] == "budget reached: --max-images 2 images submitted"
    assert f"stopped: {s['error']}" in capsys.readouterr().err


def test_readme_documents_the_error_field() -> None:
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `--summary-json PATH`"))
    assert "`error`" in row and "null only" in row and "`reason`" in row


def test_a_manifest_with_several_mistakes_gives_one_error_line_and_every_line_in_errors(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "model: ideogram-txt-2-img\nitems:\n  - id: a\n    prompt: x\n    seed: -5\n"
        "  - id: b\n    prompt: y\n    resolution: FOO\n"
    )
    summary = tmp_path / "s.json"
    code = main(["run", str(tmp_path / "m.yaml"), "--sandbox", "--out", str(tmp_path / "out"), "--no-progress",
                 "--summary-json", str(summary)])
    assert code == ExitCode.BAD_INPUT
    s = json.loads(summary.read_text())
    assert "\n" not in s["error"] and s["error"].endswith("(and 1 more: see errors)")
    assert [e.split(": ", 1)[0] for e in s["errors"]] == [f"{tmp_path / 'm.yaml'}:5", f"{tmp_path / 'm.yaml'}:8"]
    assert s["error"].startswith(s["errors"][0])
    assert _summary(2, error="m.yaml:3: seed: bad")["errors"] == ["m.yaml:3: seed: bad"]
    assert _summary(0, counts={"failed": 0})["errors"] == []
