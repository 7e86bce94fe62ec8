"""The machine misbehaves: a full disk, an unwritable folder, a damaged ledger, SIGTERM, clock jumps.

Disk-full and clock tests run the real pipeline in this process (``batchgen.app.runner.execute``) so
the fault can be injected exactly where it hurts: the image write path, the ledger's file, and the
wall clock. The others drive the command line as a user (or a container runtime) would.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api import wire as wire_mod
from batchgen.app.runner import RunOptions, execute
from batchgen.engine import download as downloader_mod
from batchgen.store import ledger as L
from tests.support.cli import (
    KEY,
    assert_all_downloaded,
    count_events,
    image_files,
    image_path,
    ledger_events,
    manifest_ids,
    run_cli,
    wait_for,
    write_manifest,
)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


async def run_in_process(manifest: Path, out: Path, base_url: str) -> Any:
    messages: list[str] = []
    with anyio.fail_after(120):
        outcome = await execute(RunOptions(manifest=manifest, out=out, base_url=base_url), messages.append)
    return outcome


class _Disk:
    """A disk with room for a few image files; after that every write fails with ENOSPC."""

    def __init__(self, room_for_images: int) -> None:
        self.room = room_for_images
        self.opened = 0

    @property
    def full(self) -> bool:
        return self.opened > self.room


class _FileOnDisk:
    def __init__(self, f: Any, disk: _Disk) -> None:
        self._f = f
        self._disk = disk

    def write(self, data: Any) -> int:
        if self._disk.full:
            raise enospc()
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class _AsyncFileOnDisk(_FileOnDisk):
    async def write(self, data: Any) -> int:  # type: ignore[override]
        if self._disk.full:
            raise enospc()
        return await self._f.write(data)


async def test_disk_full_while_writing_an_image_exits_3_and_resume_loses_nothing(
    tmp_path: Path, sandbox_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    sb = await sandbox_factory(latency=0.05, latency_sigma=0.0)
    n = 12
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    disk = _Disk(room_for_images=4)

    def open_on_a_small_disk(path: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        disk.opened += 1
        return _FileOnDisk(open(path, mode, *a, **k), disk)

    # The image write path opens its temporary file with the module's ``open`` (or aiofiles').
    monkeypatch.setattr(downloader_mod, "open", open_on_a_small_disk, raising=False)
    if hasattr(downloader_mod, "aiofiles"):
        real_async_open = downloader_mod.aiofiles.open

        async def async_open_on_a_small_disk(path: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
            disk.opened += 1
            return _AsyncFileOnDisk(await real_async_open(path, mode, *a, **k), disk)

        monkeypatch.setattr(downloader_mod.aiofiles, "open", async_open_on_a_small_disk)
    first = await run_in_process(manifest, out, sb.url)
    assert first.exit_code == 3, first
    assert "disk full" in first.reason and "run again to resume" in first.reason
    # Nothing half-written under a final name, no temporary file left behind.
    images = image_files(out)
    assert all(not name.rsplit("/", 1)[-1].startswith(".") for name in images), images
    state = L.replay(out / "ledger.jsonl")
    assert set(images) == {image_path(i) for i, st in state.items.items() if st.state == L.DOWNLOADED}
    paid_before = sb.stats()["submits_accepted"]
    assert len(images) < n

    disk.room = 10**9  # room again
    second = await run_in_process(manifest, out, sb.url)
    assert second.exit_code == 0, second
    assert_all_downloaded(out, manifest_ids(n))
    s = sb.stats()
    assert s["duplicates"] == 0, "a paid result was lost to the full disk and bought again"
    assert s["submits_accepted"] >= paid_before and s["submits_accepted"] == n


class _LedgerFile:
    """The ledger's file on a disk that fills up at the chosen line."""

    def __init__(self, f: Any, full_at: Callable[[str], bool]) -> None:
        self._f = f
        self._full_at = full_at
        self.full = False

    def write(self, text: str) -> int:
        if self.full or self._full_at(text):
            self.full = True
            raise enospc()
        return self._f.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


async def test_disk_full_while_writing_the_ledger_sends_nothing_unrecorded(
    tmp_path: Path, sandbox_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger fills up on an ``intent`` line: the POST it announces must not go out.

    A submit sent without its intent (or whose request_id cannot be written) is a paid job the
    ledger will never know about: a resume would pay for it again.
    """
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    sb = await sandbox_factory(latency=0.05, latency_sigma=0.0)
    n = 10
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    intents = 0

    def full_at_sixth_intent(text: str) -> bool:
        nonlocal intents
        if json.loads(text).get("event") == "intent":
            intents += 1
        return intents >= 6

    real_open = L.open_for_append

    def ledger_open(path: Any) -> Any:
        return _LedgerFile(real_open(path), full_at_sixth_intent)

    monkeypatch.setattr(L, "open_for_append", ledger_open)
    first = await run_in_process(manifest, out, sb.url)
    assert first.exit_code == 3, first
    assert "cannot write the ledger" in first.reason and "No space left on device" in first.reason
    state = L.replay(out / "ledger.jsonl")
    recorded = sum(st.submits for st in state.items.values())
    assert sb.stats()["submits_accepted"] == recorded, "a submit went out that the ledger cannot account for"

    monkeypatch.setattr(L, "open_for_append", real_open)
    second = await run_in_process(manifest, out, sb.url)
    assert second.exit_code == 0, second
    assert_all_downloaded(out, manifest_ids(n))
    assert sb.stats()["duplicates"] == 0
    assert sb.stats()["submits_accepted"] == n


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts are a Linux facility")
async def test_disk_full_on_a_real_small_filesystem(tmp_path: Path, sandbox_factory) -> None:
    """The same promise on a real, tiny tmpfs, through the command line (needs mount rights)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = await anyio.run_process(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount namespace)")
    try:
        sb = await sandbox_factory(latency=0.05, latency_sigma=0.0)
        n = 12
        manifest = write_manifest(tmp_path / "m.yaml", n)
        out = mnt / "out"
        args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
        first = await run_cli(*args, within=60)
        assert first.code == 3, (first.out, first.err)
        assert "No space left on device" in first.err or "disk full" in first.err, first.err
        assert "Traceback" not in first.err
        for name in image_files(out):
            assert not name.rsplit("/", 1)[-1].startswith("."), f"temporary file left behind: {name}"
        await anyio.run_process(["mount", "-o", "remount,size=64m", str(mnt)])
        second = await run_cli(*args, within=60)
        assert second.code == 0, (second.out, second.err)
        assert_all_downloaded(out, manifest_ids(n))
        assert sb.stats()["duplicates"] == 0
    finally:
        await anyio.run_process(["umount", "-l", str(mnt)], check=False)


async def test_unwritable_output_folder_is_refused_before_any_request(tmp_path: Path, sandbox_factory) -> None:
    # Tests run as root, which ignores permission bits: a folder below a regular file is unwritable for anyone.
    sb = await sandbox_factory(latency=0.05, latency_sigma=0.35)
    manifest = write_manifest(tmp_path / "m.yaml", 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", blocker / "out", "--no-progress")
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0] and str(blocker / "out") in lines[0], r.err
    assert sb.stats()["requests_total"] == 0


async def test_corrupt_ledger_line_refused_with_its_number_then_repaired_and_resumed(
    tmp_path: Path, sandbox_factory
) -> None:
    sb = await sandbox_factory(latency=0.05, latency_sigma=0.0)
    n = 6
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    first = await run_cli(*args, "--max-images", "4")
    assert first.code == 3, (first.out, first.err)  # stopped by the budget, half done
    ledger = out / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    bad = 4
    lines[bad - 1] = b'{"ts": "2026-01-01T00:00:00Z", "item": "img-0\x00\xff garbage\n'
    ledger.write_bytes(b"".join(lines))
    before = sb.stats()["requests_total"]

    refused = await run_cli(*args)
    assert refused.code == 2, (refused.out, refused.err)
    msg = refused.err.strip().splitlines()
    assert len(msg) == 1 and f"ledger.jsonl:{bad}:" in msg[0] and "ledger repair" in msg[0], refused.err
    assert sb.stats()["requests_total"] == before, "a request was sent despite the corrupt ledger"
    status = await run_cli("status", out)
    assert status.code == 2 and f":{bad}:" in status.err

    repaired = await run_cli("ledger", "repair", out)
    assert repaired.code == 0 and "moved 1 unreadable line" in repaired.out, repaired.out
    aside = [json.loads(x) for x in (out / "ledger.rejected.jsonl").read_text().splitlines()]
    assert [a["line"] for a in aside] == [bad]
    assert len(ledger.read_bytes().splitlines()) == len(lines) - 1

    resumed = await run_cli(*args)
    assert resumed.code == 0, (resumed.out, resumed.err)
    assert_all_downloaded(out, manifest_ids(n))


async def test_sigterm_behaves_like_sigint(tmp_path: Path, sandbox_factory, start_cli) -> None:
    sb = await sandbox_factory(latency=0.6, latency_sigma=0.3)
    n = 24
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--concurrency", "8")
    worker = await start_cli(*args)
    await wait_for(lambda: count_events(out, "submitted") >= 6 or worker.returncode is not None, within=30)
    assert worker.returncode is None
    worker.signal(signal.SIGTERM)
    r = await worker.wait(within=20)
    assert r.code == 130, (r.out, r.err)
    assert "Traceback" not in r.err and "resume" in r.err
    assert not L.replay(out / "ledger.jsonl").torn_tail
    ends = [ev for ev in ledger_events(out) if ev["event"] == "run_end"]
    assert ends and ends[-1]["exit_code"] == 130
    resumed = await run_cli(*args, within=60)
    assert resumed.code == 0, (resumed.out, resumed.err)
    assert_all_downloaded(out, manifest_ids(n))
    s = sb.stats()
    assert s["duplicates"] <= s["lost_submit_answers"] + 1, s


async def test_second_run_refused_while_the_first_holds_the_lock(tmp_path: Path, sandbox_factory, start_cli) -> None:
    sb = await sandbox_factory(latency=2.0, latency_sigma=0.0)
    manifest = write_manifest(tmp_path / "m.yaml", 4)
    out = tmp_path / "out"
    args = ("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    first = await start_cli(*args)
    await wait_for(lambda: count_events(out, "submitted") >= 1 or first.returncode is not None, within=30)
    lines = (out / "ledger.jsonl").read_bytes()
    second = await run_cli(*args, within=30)
    assert second.code == 3, (second.out, second.err)
    assert "another batchgen run" in second.err
    assert (out / "ledger.jsonl").read_bytes()[: len(lines)] == lines
    assert count_events(out, "run_start") == 1, "the refused run wrote to the ledger"
    done = await first.wait(within=60)
    assert done.code == 0
    assert sb.stats()["submits_accepted"] == 4


# ---- wall-clock jumps --------------------------------------------------------------------------


class JumpingWallClock:
    """This machine's wall time, leaping by hours, alternately forwards and back, every few readings.

    Only the worker's readings leap (an NTP step or a resumed VM on the worker's host); the
    service keeps true time, and stamps its rate-limit resets and ``Date`` headers with it.
    """

    def __init__(self, leap: float = 2 * 3600.0, every: int = 3) -> None:
        self.leap = leap
        self.every = every
        self.calls = 0

    def __call__(self) -> float:
        import time

        self.calls += 1
        phase = (self.calls // self.every) % 3  # 0: true time, 1: hours ahead, 2: hours behind
        return time.time() + (0.0, self.leap, -self.leap)[phase]


async def test_wall_clock_jumps_do_not_disturb_scheduling(
    tmp_path: Path, sandbox_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = JumpingWallClock()

    class LeapingDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(wall(), tz or UTC)

    # Every wall-clock reading of the worker: rate-limit resets (wire), ledger stamps, and the run's
    # own (passed to execute below).
    for module in (wire_mod, L):
        monkeypatch.setattr(module, "datetime", LeapingDatetime)
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    # A tight server-side limit makes real 429s with reset stamps; every one must be honoured
    # for about its true length, never for the hours the clock leapt.
    sb = await sandbox_factory(latency=0.1, latency_sigma=0.2, rpm=20, time_scale=0.05, rpm_scope="all")
    n = 16
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    with anyio.fail_after(60):  # one leapt reset honoured as hours (or even the 300 s cap) fails this
        outcome = await execute(RunOptions(manifest=manifest, out=out, base_url=sb.url), lambda m: None, wall=wall)
    assert outcome.exit_code == 0, outcome
    assert sb.stats()["rate_limited"] > 0, "the test needs rate-limit answers to mean anything"
    events = ledger_events(out)
    assert not [ev for ev in events if ev["event"] in ("expired", "failed")]
    assert sb.stats()["not_found"] == 0 and sb.stats()["duplicates"] == 0
    assert_all_downloaded(out, manifest_ids(n))
    assert wall.calls > 0


def test_rate_limit_reset_measured_on_the_services_clock_when_ours_leapt() -> None:
    served = "Sun, 01 Mar 2026 12:00:00 GMT"
    headers = {"Date": served, "x-rate-limit-reset-at-utc": "2026-03-01T12:00:20.000Z"}
    behind = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)  # our clock two hours slow
    ahead = datetime(2026, 3, 1, 14, 0, 0, tzinfo=UTC)
    assert wire_mod.reset_delay(headers, behind) == pytest.approx(20.0)
    assert wire_mod.reset_delay(headers, ahead) == pytest.approx(20.0)
    # Without a Date to compare with, no clock can make the wait longer than the cap.
    del headers["Date"]
    assert wire_mod.reset_delay(headers, behind) == wire_mod.MAX_RESET_WAIT_S
