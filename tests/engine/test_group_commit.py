"""Images ready at the same moment are stored in one group: one thread hop, one fsync per folder,
and still, for every file, its bytes fsync'd before its rename and its folder fsync'd before the
caller is told it is stored."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.engine.groupcommit import GroupCommit
from batchgen.store import storage
from batchgen.store.storage import commit_files


def listing(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


def staged(folder: Path, name: str, body: bytes) -> tuple[Any, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    f = open(tmp, "wb")  # noqa: SIM115 - closed by the commit
    f.write(body)
    return f, tmp, folder / f"{name}.png"


async def test_images_ready_together_share_one_hop_and_each_is_stored(tmp_path: Path) -> None:
    seen: list[int] = []

    def counting(files):
        seen.append(len(files))
        return commit_files(files)

    commit = GroupCommit(counting)
    files = [staged(tmp_path, f"img-{i}", bytes([i]) * 100) for i in range(8)]
    async with anyio.create_task_group() as tg:
        for f in files:
            tg.start_soon(commit, *f)
    assert listing(tmp_path) == sorted(f"img-{i}.png" for i in range(8))
    assert all((tmp_path / f"img-{i}.png").read_bytes() == bytes([i]) * 100 for i in range(8))
    assert sum(seen) == 8 and commit.groups == len(seen) < 8  # shared: fewer hops than images
    assert all(f.closed for f, _, _ in files)


def test_each_file_is_fsynced_before_its_rename_and_each_folder_once_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage.os, "replace", replace)
    a, b = tmp_path / "a", tmp_path / "b"
    files = [staged(a, "x", b"1"), staged(a, "y", b"2"), staged(b, "z", b"3")]
    assert commit_files(files) == [None, None, None]
    for _, tmp, final in files:
        assert calls.index(("fsync", str(tmp))) < calls.index(("rename", str(final)))
    last_rename = max(i for i, c in enumerate(calls) if c[0] == "rename")
    folder_syncs = [c[1] for c in calls[last_rename + 1:]]
    assert sorted(folder_syncs) == [str(a), str(b)]  # once each, after every rename


async def test_one_file_failing_fails_only_its_own_caller(tmp_path: Path) -> None:
    commit = GroupCommit()
    good = staged(tmp_path, "good", b"ok")
    f, tmp, _ = staged(tmp_path, "bad", b"no")
    bad = (f, tmp, tmp_path / "missing-folder" / "bad.png")
    outcome: dict[str, object] = {}

    async def store(name: str, args: tuple[Any, Path, Path]) -> None:
        try:
            await commit(*args)
            outcome[name] = "stored"
        except OSError as e:
            outcome[name] = e

    async with anyio.create_task_group() as tg:
        tg.start_soon(store, "bad", bad)
        tg.start_soon(store, "good", good)
    assert outcome["good"] == "stored" and (tmp_path / "good.png").read_bytes() == b"ok"
    assert isinstance(outcome["bad"], OSError) and f.closed


async def test_a_broken_group_fails_every_caller_and_leaves_none_waiting(tmp_path: Path) -> None:
    def broken(files):
        for f, _, _ in files:
            f.close()
        raise RuntimeError("disk driver fell over")

    commit = GroupCommit(broken)
    errors: list[BaseException] = []

    async def store(args: tuple[Any, Path, Path]) -> None:
        try:
            await commit(*args)
        except OSError as e:
            errors.append(e)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(store, staged(tmp_path, f"i{i}", b"x"))
    assert len(errors) == 4 and all("disk driver fell over" in str(e) for e in errors)
    assert listing(tmp_path, "*.png") == []


class FullDisk:
    """A buffered file on a full disk: its flush fails, and so does the flush its close retries."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.closed = False

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.closed = True
        self.real.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_fails_its_own_file_with_its_errno_and_the_group_goes_on(tmp_path: Path) -> None:
    first, (f, tmp, final), last = staged(tmp_path, "a", b"1"), staged(tmp_path, "b", b"2"), staged(tmp_path, "c", b"3")
    full = FullDisk(f)
    results = commit_files([first, (full, tmp, final), last])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], OSError) and results[1].errno == errno.ENOSPC  # the run stops: DiskFull
    assert listing(tmp_path, "*.png") == ["a.png", "c.png"] and full.closed and last[0].closed
