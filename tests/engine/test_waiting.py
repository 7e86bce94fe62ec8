"""``wait_event``: a bounded wait for a wake-up that ends on the event or the time, with one timer,
on asyncio's loop and on uvloop's (where anyio's deadline timers re-arm in a busy loop)."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest

from batchgen.engine import waiting
from batchgen.engine.waiting import wait_event


@pytest.fixture
def expiries(monkeypatch: pytest.MonkeyPatch) -> list[anyio.Event]:
    fired: list[anyio.Event] = []
    real = waiting._expire

    def counting(event: anyio.Event) -> None:
        fired.append(event)
        real(event)

    monkeypatch.setattr(waiting, "_expire", counting)
    return fired


def run_on(loop: str, fn) -> None:
    anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": loop == "uvloop"})


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_wait_with_nothing_to_wake_it_ends_after_its_time_with_one_timer(loop: str, expiries) -> None:
    async def main() -> None:
        for _ in range(20):
            event = anyio.Event()
            with anyio.fail_after(5):
                await wait_event(event, 0.0123)
            assert event.is_set()

    run_on(loop, main)
    assert len(expiries) == 20  # one timer run a wait: no re-arming until the clock moves on


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_wait_ends_when_its_event_is_set_and_its_timer_never_fires_later(loop: str, expiries) -> None:
    async def main() -> None:
        event = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_event, event, 0.05)
            await anyio.lowlevel.checkpoint()
            event.set()
        await anyio.sleep(0.1)  # past the wait's time limit

    run_on(loop, main)
    assert expiries == []


def test_without_a_limit_only_the_event_ends_the_wait(expiries) -> None:
    async def main() -> None:
        event = anyio.Event()
        with anyio.move_on_after(0.05) as scope:
            await wait_event(event, math.inf)
        assert scope.cancelled_caught and not event.is_set()
        event.set()
        await wait_event(event, math.inf)  # set already: returns at once

    run_on("asyncio", main)
    assert expiries == []
