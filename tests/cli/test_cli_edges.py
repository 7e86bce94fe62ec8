"""The command line's own edges: bad service addresses and keys, broken pipes, a locked folder."""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path

import pytest

from batchgen.cli import commands
from tests.support.cli import REPO, run_cli, write_manifest


async def test_base_url_without_scheme_or_with_a_path_exits_2_and_sends_nothing(sandbox_factory, tmp_path):
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    hostport = sb.url.removeprefix("http://")
    for bad in (hostport, f"htp://{hostport}", f"{sb.url}/v2", f"{sb.url}?q=1"):
        r = await run_cli("run", manifest, "--base-url", bad, "--out", tmp_path / "out", "--no-progress")
        assert r.code == 2, (bad, r.err)
        assert "--base-url" in r.err and len(r.err.strip().splitlines()) == 1, r.err
        assert "Traceback" not in r.err and "double" not in r.err
    stats = sb.stats()
    assert stats["submits_accepted"] == 0 and stats["status_polls"] == 0
    assert not (tmp_path / "out" / "ledger.jsonl").exists()


async def test_a_key_with_a_comment_line_exits_2_with_one_line_and_never_shows_it(sandbox_factory, tmp_path):
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    key = "SG_secret_1234567890abcdef\n# the production key"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", tmp_path / "out", "--no-progress", key=key)
    assert r.code == 2, r.err
    assert "SEGMIND_API_KEY" in r.err and len(r.err.strip().splitlines()) == 1
    assert "SG_secret" not in r.err + r.out and "internal error" not in r.err
    assert sb.stats()["submits_accepted"] == 0


class _ClosedPipe(io.TextIOBase):
    """stdout whose reader has gone, as after ``| head -1``."""

    def __init__(self) -> None:
        self._fd = os.open(os.devnull, os.O_WRONLY)

    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        return self._fd


def test_plan_into_a_closed_pipe_ends_quietly(monkeypatch, capsys, tmp_path):
    saved = os.dup(1)
    try:
        monkeypatch.setattr("sys.stdout", _ClosedPipe())
        code = commands.main(["plan", str(REPO / "jobs" / "demo.yaml"), "--out", str(tmp_path / "o")])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert code == 0
    err = capsys.readouterr().err
    assert "internal error" not in err and "BrokenPipe" not in err


def _ledger_with_a_bad_middle_line(out: Path) -> Path:
    out.mkdir(parents=True)
    ledger = out / "ledger.jsonl"
    ledger.write_text('{"ts":"2026-01-01T00:00:00Z","item":null,"event":"run_start"}\nnot json\n'
                      '{"ts":"2026-01-01T00:00:01Z","item":null,"event":"run_end"}\n')
    return ledger


def test_ledger_repair_refuses_while_a_run_holds_the_folder(tmp_path, capsys):
    out = tmp_path / "out"
    ledger = _ledger_with_a_bad_middle_line(out)
    before = ledger.read_bytes()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a live run holds
        code = commands.main(["ledger", "repair", str(out)])
    finally:
        os.close(fd)
    assert code == 3
    assert "another batchgen run" in capsys.readouterr().err
    assert ledger.read_bytes() == before
    assert commands.main(["ledger", "repair", str(out)]) == 0
    assert b"not json" not in ledger.read_bytes()


@pytest.mark.parametrize("command", [["status"], ["ledger", "repair"], ["status", "--json"]])
def test_a_ledger_that_is_a_folder_is_one_line_and_exit_2(tmp_path, capsys, command):
    (tmp_path / "ledger.jsonl").mkdir()
    assert commands.main([*command, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ledger.jsonl" in err and "internal error" not in err


async def test_plan_reads_the_balance_where_base_url_points(sandbox_factory, tmp_path):
    sb = await sandbox_factory(credits=42.0)
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    r = await run_cli("plan", manifest, "--out", tmp_path / "out", "--base-url", sb.url)
    assert r.code == 0, r.err
    assert "balance $42.00" in r.out
    assert sb.stats()["submits_accepted"] == 0


def test_a_store_failure_anywhere_in_a_command_is_one_line_and_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An object store failing after the command's own checks (a resume's listing, a segment
    number) ends like every abort: one line, exit 3, never "internal error"."""
    from batchgen.cli.commands import main
    from batchgen.store.location import StorageFailure

    def failing(*args: object, **kwargs: object) -> object:
        raise StorageFailure("s3://bucket/out: cannot reach the object store at http://127.0.0.1:9 (refused)")

    monkeypatch.setattr("batchgen.app.runner.execute", failing)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("model: ideogram-txt-2-img\nitems:\n  - id: a\n    prompt: x\n")
    code = main(["run", str(manifest), "--sandbox", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.strip().splitlines() == ["batchgen: s3://bucket/out: cannot reach the object store at "
                                        "http://127.0.0.1:9 (refused)"]
