"""OutputFiles: a ledger ``file`` resolves inside its output folder or not at all, and is checked
against the size and sha256 the ledger recorded (hashed only when written since its line)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from batchgen.store.filecheck import FileState, OutputFiles

BODY = b"\x89PNG\r\n\x1a\n" + b"x" * 200
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(BODY)
    (tmp_path / "secret.png").write_bytes(BODY)
    return d


def check(out: Path, file: object, **recorded: object) -> FileState:
    return OutputFiles(out).check(file, **{"size": len(BODY), "sha256": SHA, **recorded})[0]


@pytest.mark.parametrize("file", [
    "../secret.png", "images/../../secret.png", "/etc/passwd", "", ".", "images/\x00a.png", None, 3, ["images/a.png"],
])
def test_names_that_leave_the_folder_or_are_no_name_are_refused(out: Path, file: object) -> None:
    assert OutputFiles(out).locate(file) is None
    assert check(out, file) is FileState.REFUSED


def test_an_absolute_path_is_refused_even_when_it_points_into_the_folder(out: Path) -> None:
    assert check(out, str(out / "images" / "a.png")) is FileState.REFUSED


def test_the_recorded_file_is_intact_and_its_path_is_given(out: Path) -> None:
    state, path = OutputFiles(out).check("images/a.png", size=len(BODY), sha256=SHA, written_ts=None)
    assert (state, path) == (FileState.INTACT, out / "images" / "a.png")


def test_dot_parts_inside_the_folder_are_fine(out: Path) -> None:
    assert check(out, "./images/a.png") is FileState.INTACT
    assert check(out, "images/./a.png") is FileState.INTACT


def test_symlinks_out_of_the_folder_are_refused_at_any_level(out: Path, tmp_path: Path) -> None:
    (out / "images" / "b.png").symlink_to(tmp_path / "secret.png")
    assert check(out, "images/b.png") is FileState.REFUSED
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.png").write_bytes(BODY)
    (out / "linked").symlink_to(tmp_path / "elsewhere")
    assert check(out, "linked/c.png") is FileState.REFUSED


def test_a_dangling_or_looping_symlink_is_missing_not_an_error(out: Path) -> None:
    (out / "images" / "d.png").symlink_to("nowhere.png")
    (out / "images" / "e.png").symlink_to("e.png")
    assert check(out, "images/d.png") is FileState.MISSING
    assert check(out, "images/e.png") in (FileState.MISSING, FileState.REFUSED)


def test_an_output_folder_reached_through_a_symlink_is_fine(out: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(out)
    assert check(tmp_path / "alias", "images/a.png") is FileState.INTACT


def test_missing_and_not_regular_files(out: Path) -> None:
    assert check(out, "images/none.png") is FileState.MISSING
    (out / "images" / "dir.png").mkdir()
    assert check(out, "images/dir.png") is FileState.MISSING


def test_size_is_always_checked(out: Path) -> None:
    assert check(out, "images/a.png", size=len(BODY) + 1, written_ts=time.time() + 3600) is FileState.DAMAGED


def test_content_is_hashed_only_when_written_after_its_line(out: Path) -> None:
    p = out / "images" / "a.png"
    p.write_bytes(BODY[:-1] + b"y")  # same size, other bytes
    line = p.stat().st_mtime
    assert check(out, "images/a.png", written_ts=line) is FileState.INTACT  # not modified since: trusted
    assert check(out, "images/a.png", written_ts=line - 60) is FileState.DAMAGED
    assert check(out, "images/a.png", written_ts=None) is FileState.DAMAGED  # no time to compare: hashed
    os.utime(p, (line - 120, line - 120))
    assert check(out, "images/a.png", written_ts=line - 60) is FileState.INTACT


def test_nothing_recorded_means_existence_is_enough(out: Path) -> None:
    assert OutputFiles(out).check("images/a.png")[0] is FileState.INTACT
