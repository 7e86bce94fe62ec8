"""Admission and budget: --max-images and --max-cost hold over every run, counting what is in flight.

A budget that forgets in-flight work overspends by up to the concurrency; one that stops while
admitted submits are unsettled cancels work it could have paid for. Both are pinned here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.engine.context import Run
from tests.engine.fakes import FakeClient, item, make_run
from tests.support.sandbox import FakeClock

TS = "2026-03-01T12:00:00.000Z"


def budget_run(tmp_path: Path, clock: FakeClock, n: int = 5, **cfg: Any) -> Run:
    run = make_run(tmp_path, FakeClient(), clock, [item(i) for i in range(n)], **cfg)
    run.admission.queue(resubmit=[], fresh=run.items)
    return run


def paid_earlier(run: Run, n: int, cost: float | None) -> None:
    """``n`` images submitted and completed by an earlier run, at ``cost`` each (None: not reported)."""
    for i in range(n):
        name = f"old-{i}-{cost}"
        run.ledger.append("submitted", name, request_id=f"r-{i}")
        run.ledger.append("completed", name, output_url="https://cdn/x.png", cost_usd=cost)


def test_no_budget_allows_everything(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock)
    paid_earlier(run, 100, 1.0)
    assert run.admission.budget_allows_one_more() is None


def test_max_images_counts_earlier_runs_and_admitted_submits(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock, max_images=3)
    paid_earlier(run, 2, 0.5)
    adm = run.admission
    assert adm.budget_allows_one_more() is None
    adm.submitting = 1  # admitted, no answer yet: it may become the third image
    assert adm.budget_allows_one_more() == "budget reached: --max-images 3 images submitted"


def test_max_cost_counts_spend_and_every_unpaid_item_in_flight(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock, price_usd=1.0, max_cost_usd=4.5)
    paid_earlier(run, 1, 1.25)  # a reported cost
    paid_earlier(run, 1, None)  # none reported: counted at the price, 1.0
    adm = run.admission
    assert adm.spent_estimate() == pytest.approx(2.25)
    adm.in_flight = 1
    assert adm.budget_allows_one_more() is None  # 2.25 + (1 + 1) * 1.0 = 4.25 <= 4.5
    adm.submitting = 1
    why = adm.budget_allows_one_more()  # 2.25 + (2 + 1) * 1.0 = 5.25 > 4.5
    assert why == "budget reached: --max-cost $4.50 (spent $2.25, 2 in flight)"


def test_max_cost_of_exactly_the_price_allows_that_one_image(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock, price_usd=0.1, max_cost_usd=0.3)
    run.admission.in_flight = 2
    assert run.admission.budget_allows_one_more() is None  # 0.30000000000000004 is not over 0.3


async def test_budget_reached_stops_submitting_with_the_reason(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock, max_images=2)
    paid_earlier(run, 2, 0.5)
    assert await run.admission.next_submission() is None
    assert run.stop.stop_reason == "budget reached: --max-images 2 images submitted"
    assert run.stop.abort_reason is None  # what is in flight still finishes
    assert run.admission.submitting == 0 and run.admission.slots.value == run.cfg.concurrency


async def test_budget_waits_for_admitted_submits_before_stopping(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock, max_images=1)
    adm = run.admission
    first = await adm.next_submission()
    assert first == run.items[0] and adm.submitting == 1
    got: list[object] = []

    async def second() -> None:
        got.append(await adm.next_submission())

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert got == [] and run.stop.stop_reason is None  # the first may still be refused
        adm.withdraw()  # it was: the one image the budget allows is still to be had
    assert got == [run.items[1]]


async def test_budget_stops_once_the_admitted_submit_was_accepted(tmp_path: Path, clock: FakeClock) -> None:
    run = budget_run(tmp_path, clock, max_images=1)
    adm = run.admission
    first = await adm.next_submission()
    assert first is not None
    got: list[object] = []

    async def second() -> None:
        got.append(await adm.next_submission())

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        run.ledger.append("submitted", first.id, request_id="r-1")
        run.on_submitted(first, "r-1")
    assert got == [None]
    assert run.stop.stop_reason == "budget reached: --max-images 1 images submitted"


async def test_resubmits_go_before_fresh_items(tmp_path: Path, clock: FakeClock) -> None:
    run = make_run(tmp_path, FakeClient(), clock)
    again, fresh = item("again"), item("fresh")
    run.admission.queue(resubmit=[again], fresh=[fresh])
    assert await run.admission.next_submission() == again
    assert await run.admission.next_submission() == fresh


async def test_nothing_left_and_nothing_in_flight_ends_submission(tmp_path: Path, clock: FakeClock) -> None:
    run = make_run(tmp_path, FakeClient(), clock)
    assert await run.admission.next_submission() is None
    assert run.stop.stop_reason is None


async def test_waits_for_in_flight_items_that_may_come_back(tmp_path: Path, clock: FakeClock) -> None:
    run = make_run(tmp_path, FakeClient(), clock)
    adm = run.admission
    await adm.resume()  # one item in flight; an expiry would send it back for submission
    got: list[object] = []

    async def take() -> None:
        got.append(await adm.next_submission())

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        adm.requeue(item("back"))
    assert got == [item("back")]
