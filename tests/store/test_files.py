"""Nothing in an output folder is written through a planted symbolic link."""

from __future__ import annotations

import os

import pytest

from batchgen.core.errors import ExitCode, UserError
from batchgen.store.files import atomic_write_text, ensure_dir, open_nofollow


def test_open_refuses_a_link_and_leaves_its_target_alone(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "ledger.jsonl"
    link.symlink_to(target)
    with pytest.raises(UserError) as e:
        open_nofollow(link, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert e.value.code == ExitCode.BAD_INPUT and str(link) in str(e.value)
    assert target.read_text() == "keep me"


def test_a_dangling_link_is_refused_too(tmp_path):
    link = tmp_path / ".lock"
    link.symlink_to(tmp_path / "nowhere" / "file")
    with pytest.raises(UserError):
        open_nofollow(link, os.O_RDWR | os.O_CREAT)
    assert not (tmp_path / "nowhere").exists()


def test_ensure_dir_refuses_a_linked_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "images").symlink_to(elsewhere)
    with pytest.raises(UserError) as e:
        ensure_dir(tmp_path / "out" / "images")
    assert "images" in str(e.value)


def test_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    dest = tmp_path / "report.html"
    dest.symlink_to(target)
    atomic_write_text(dest, "<html>new</html>")
    assert not dest.is_symlink() and dest.read_text() == "<html>new</html>"
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
