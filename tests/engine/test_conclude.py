"""How a run ends: the exit code scripts and cron jobs rely on, from how it stopped and what is left.

``verdict`` is checked row by row; ``run_batch`` then runs whole (composition root, all three
stages) over a scripted client, without a socket, for the endings a user meets most.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api.outcomes import Accepted, ItemFatal, JobResult, JobStatus, RunFatal
from batchgen.core.errors import ExitCode
from batchgen.engine.conclude import conclude, tally, verdict
from batchgen.engine.config import RunConfig
from batchgen.engine.counters import SnapshotSource
from batchgen.engine.root import _watch_signals, run_batch
from batchgen.engine.stopping import Pulse, StopControl
from batchgen.sandbox.images import render_png
from batchgen.store.ledger import fold
from batchgen.store.shards import image_bucket
from tests.engine.fakes import NO_WAIT, FakeClient, events, item, make_run, open_ledger
from tests.support.sandbox import FakeClock

NOTHING_LEFT = {"downloaded": 3, "failed": 0, "failed_retryable": 0, "in_flight": 0, "pending": 0}


def stop(*, interrupted: bool = False, abort: str | None = None, stop_reason: str | None = None) -> StopControl:
    s = StopControl(Pulse(), grace_s=3.0)
    s.interrupted = interrupted
    s.abort_reason = abort
    s.stop_reason = stop_reason or abort
    return s


def left(**counts: int) -> dict[str, int]:
    return {**NOTHING_LEFT, **counts}


# ---- verdict: one row per ending -------------------------------------------------------------


def test_interrupted_is_130_whatever_else_happened() -> None:
    code, reason = verdict(stop(interrupted=True, abort="disk full"), left(pending=2))
    assert code == ExitCode.INTERRUPTED == 130
    assert reason == "interrupted; run the same command again to resume"


def test_an_abort_is_3_with_its_reason() -> None:
    assert verdict(stop(abort="the API key was refused"), left()) == (ExitCode.ABORTED, "the API key was refused")


@pytest.mark.parametrize("what", ["pending", "in_flight", "failed_retryable"])
def test_a_stop_with_work_left_is_3(what: str) -> None:
    code, reason = verdict(stop(stop_reason="budget reached"), left(**{what: 1}))
    assert (code, reason) == (ExitCode.ABORTED, "budget reached")


def test_a_stop_that_left_nothing_undone_is_a_finished_run() -> None:
    assert verdict(stop(stop_reason="budget reached"), left()) == (ExitCode.OK, None)
    assert verdict(stop(stop_reason="budget reached"), left(failed=1)) == (ExitCode.FAILED_ITEMS, None)


@pytest.mark.parametrize("what", ["failed", "failed_retryable", "pending", "in_flight"])
def test_finished_with_items_not_downloaded_is_1(what: str) -> None:
    assert verdict(stop(), left(**{what: 1})) == (ExitCode.FAILED_ITEMS, None)


def test_everything_downloaded_is_0() -> None:
    assert verdict(stop(), left()) == (ExitCode.OK, None)


def test_tally_reads_where_each_item_stands_over_every_run() -> None:
    ts = "2026-03-01T12:00:00.000Z"
    history: list[dict[str, Any]] = [
        {"ts": ts, "item": "done", "event": "downloaded", "file": "images/done.png"},
        {"ts": ts, "item": "bad", "event": "failed", "retryable": False},
        {"ts": ts, "item": "retry", "event": "failed", "retryable": True},
        {"ts": ts, "item": "polling", "event": "submitted", "request_id": "r"},
        {"ts": ts, "item": "paid", "event": "completed", "output_url": "https://cdn/p.png"},
        {"ts": ts, "item": "maybe", "event": "intent"},
    ]
    names = ["done", "bad", "retry", "polling", "paid", "maybe", "new"]
    assert tally([item(n) for n in names], fold(history)) == {
        "downloaded": 1, "failed": 1, "failed_retryable": 1, "in_flight": 3, "pending": 1,
    }


def test_conclude_writes_run_end_with_the_counts(tmp_path: Path, clock: FakeClock) -> None:
    run = make_run(tmp_path, FakeClient(), clock, [item(1)])
    run.stop.abort("the API key was refused")
    run.counters.retries = 2
    out = conclude(run)
    assert (out.exit_code, out.reason) == (3, "the API key was refused")
    assert out.counts["retries"] == 2 and out.counts["pending"] == 1 and out.counts["items"] == 1
    (end,) = events(run)
    assert end["event"] == "run_end" and end["exit_code"] == 3 and end["reason"] == "the API key was refused"
    assert end["counts"] == out.counts


# ---- run_batch, whole, over a scripted client --------------------------------------------------


async def run_whole(tmp_path: Path, client: FakeClient, n: int = 3, **cfg: Any) -> tuple[Any, SnapshotSource]:
    """Runs ``n`` items to the end; returns the outcome and the snapshot source progress displays get."""
    items = [item(i) for i in range(n)]
    config = RunConfig(**{"slug": "test-model", "price_usd": 0.5, "expected_latency_s": 0.02, "retry": NO_WAIT, **cfg})
    ledger = open_ledger(tmp_path)
    sources: list[SnapshotSource] = []
    with anyio.fail_after(20):
        outcome = await run_batch(config, items, tmp_path, ledger, client, handle_signals=False,
                                  on_start=sources.append)
    ledger.close()
    return outcome, sources[0]


async def test_a_whole_run_downloads_every_item_and_exits_0(tmp_path: Path) -> None:
    png = render_png("a lighthouse", 1, 64, 48)
    client = FakeClient(
        submit=[Accepted(f"r-{i}") for i in range(3)],
        status=[JobStatus("COMPLETED")],
        result=[JobResult("COMPLETED", "https://cdn/x.png", cost_usd=0.5, inference_time=1.0)],
        images={"https://cdn/x.png": png},
    )
    outcome, progress = await run_whole(tmp_path, client)
    assert (outcome.exit_code, outcome.reason) == (0, None)
    assert outcome.counts["downloaded"] == 3 and outcome.counts["submitted"] == 3
    assert outcome.spent_usd == pytest.approx(1.5)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").rglob("*.png")) == sorted(
        f"images/{image_bucket(f'item-00{i}')}/item-00{i}.png" for i in range(3))
    seen = progress()
    assert (seen.items, seen.done, seen.downloaded, seen.failed, seen.in_flight) == (3, 3, 3, 0, 0)
    assert seen.spent_usd == pytest.approx(1.5) and seen.per_min > 0


async def test_progress_counts_what_earlier_runs_finished(tmp_path: Path) -> None:
    png = render_png("a lighthouse", 1, 64, 48)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "item-000.png").write_bytes(png)
    earlier = open_ledger(tmp_path)
    earlier.append("downloaded", "item-000", file="images/item-000.png")
    earlier.close()
    client = FakeClient(submit=[ItemFatal("prompt refused", 400)])
    outcome, progress = await run_whole(tmp_path, client)
    assert outcome.exit_code == 1
    seen = progress()
    assert (seen.items, seen.done, seen.downloaded, seen.failed) == (3, 1, 0, 2)


async def test_a_refused_key_aborts_the_run_with_3(tmp_path: Path) -> None:
    client = FakeClient(submit=[RunFatal("auth", "the API key was refused", 401)])
    outcome, _ = await run_whole(tmp_path, client)
    assert (outcome.exit_code, outcome.reason) == (3, "the API key was refused")
    assert client.count("submit") == 1
    assert outcome.counts["pending"] == 3


async def test_items_refused_for_good_finish_the_run_with_1(tmp_path: Path) -> None:
    outcome, _ = await run_whole(tmp_path, FakeClient(submit=[ItemFatal("prompt refused", 400)]))
    assert (outcome.exit_code, outcome.reason) == (1, None)
    assert outcome.counts["failed"] == 3


async def test_a_budget_that_stops_the_run_early_is_3(tmp_path: Path) -> None:
    client = FakeClient(submit=[RunFatal("auth", "must not be asked", 401)])
    outcome, _ = await run_whole(tmp_path, client, max_images=0)
    assert outcome.exit_code == 3 and outcome.reason == "budget reached: --max-images 0 images submitted"
    assert client.calls == []


# ---- signals: the engine interrupts; the caller decides how the process ends -------------------


async def test_second_signal_syncs_the_ledger_and_hands_the_ending_to_the_caller(
    tmp_path: Path, clock: FakeClock
) -> None:
    run = make_run(tmp_path, FakeClient(), clock)
    run.record("run_start", None)
    calls: list[str] = []
    synced = run.ledger.sync

    def sync() -> None:
        calls.append("sync")
        synced()

    run.ledger.sync = sync  # type: ignore[method-assign]
    left = anyio.Event()

    def second_signal() -> None:
        calls.append("second signal")
        left.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, run, second_signal)
            await anyio.wait_all_tasks_blocked()
            os.kill(os.getpid(), signal.SIGINT)
            while not run.stop.interrupted:
                await run.admission.changed.wait()  # an interrupt stops submitting, which wakes waiters
            assert run.stop.stop_reason == "interrupted" and calls == []
            os.kill(os.getpid(), signal.SIGTERM)
            await left.wait()
            tg.cancel_scope.cancel()
    assert calls == ["sync", "second signal"]  # synced before the caller may leave
