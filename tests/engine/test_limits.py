"""RateLimiter and backoff, driven by a hand-moved clock: no test waits in real time."""

from __future__ import annotations

import asyncio
import random

import anyio
import pytest

from batchgen.engine import limits
from batchgen.engine.config import RetryPolicy, backoff_delay
from batchgen.engine.limits import RateLimiter


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake clock that ``anyio.sleep`` inside the limiter advances instead of waiting."""
    c = Clock()

    async def fake_sleep(seconds: float) -> None:
        assert seconds > 0, "the limiter never needs to sleep for nothing"
        c.t += seconds
        await asyncio.sleep(0)

    monkeypatch.setattr(limits.anyio, "sleep", fake_sleep)
    return c


async def acquisitions(lim: RateLimiter, clock: Clock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        await lim.acquire()
        times.append(clock())
    return times


def max_in_any_window(times: list[float], window: float = 60.0) -> int:
    """Most acquisitions in any half-open window [t, t + window) starting at one of them."""
    s = sorted(times)
    return max(sum(1 for u in s if t <= u < t + window) for t in s)


@pytest.mark.parametrize("rpm", [5, 7.5, 50, 600])
async def test_configured_rpm_is_never_exceeded_in_any_60s_window(clock, rpm):
    lim = RateLimiter(rpm, clock=clock)
    times = await acquisitions(lim, clock, int(rpm * 3) + 2)
    assert max_in_any_window(times) <= int(rpm)
    # ...and the limit is used, not squandered: the window holds close to rpm requests.
    assert max_in_any_window(times) >= int(rpm * 0.9)


async def test_concurrent_acquirers_share_the_limit(clock):
    lim = RateLimiter(10, clock=clock)
    times: list[float] = []

    async def worker() -> None:
        for _ in range(6):
            await lim.acquire()
            times.append(clock())

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(worker)
    assert len(times) == 30
    assert max_in_any_window(times) <= 10


async def test_spacing_holds_across_idle_gaps(clock):
    lim = RateLimiter(6, clock=clock)
    times = await acquisitions(lim, clock, 3)
    clock.t += 45.0  # idle; then a burst must not exceed the limit when counted with the first three
    times += await acquisitions(lim, clock, 10)
    assert max_in_any_window(times) <= 6


async def test_rate_limited_blocks_until_the_announced_reset(clock):
    lim = RateLimiter(None, clock=clock, rng=random.Random(1))
    await lim.acquire()
    t0 = clock()
    pause = lim.on_rate_limited(30.0)
    assert 30.0 <= pause <= 30.25 + 1e-9
    await lim.acquire()
    assert clock() >= t0 + 30.0
    assert lim.rate_limited == 1


async def test_rate_limited_pause_is_capped(clock):
    lim = RateLimiter(50, clock=clock, retry=RetryPolicy(rate_limit_max_pause_s=120.0))
    t0 = clock()
    assert lim.on_rate_limited(10_000.0) == 120.0
    await lim.acquire()
    assert t0 + 120.0 <= clock() <= t0 + 121.0


async def test_rate_limited_without_reset_backs_off_more_each_time(clock):
    lim = RateLimiter(None, clock=clock, rng=random.Random(3))
    pauses = [lim.on_rate_limited(None) for _ in range(6)]
    # Full jitter halves at worst, so compare attempt k with attempt k+2 (four times the ceiling).
    assert all(pauses[k + 2] > pauses[k] for k in range(4))
    lim.on_success()
    assert lim.on_rate_limited(None) <= 1.0


async def test_without_rpm_requests_go_out_freely_until_a_429(clock):
    lim = RateLimiter(None, clock=clock)
    t0 = clock()
    await acquisitions(lim, clock, 100)
    assert clock() == t0
    assert lim.current_rpm is None


async def test_a_429_without_rpm_sets_a_rate_below_the_observed_one_and_it_recovers(clock):
    lim = RateLimiter(None, clock=clock, rng=random.Random(0))
    for _ in range(40):  # 40 requests in the last 40 s: the service stopped us at 40/min
        await lim.acquire()
        clock.t += 1.0
    lim.on_rate_limited(None)  # no reset time announced: the limit must be discovered
    discovered = lim.current_rpm
    assert discovered is not None and discovered < 40

    t429 = clock()
    after = await acquisitions(lim, clock, int(discovered * 3))
    # Until the limiter starts probing upward again (a quiet minute), it keeps to the discovered rate.
    assert max_in_any_window([t for t in after if t < t429 + 60.0]) <= discovered

    # Quiet minutes: the limit creeps back up rather than staying low forever.
    clock.t += 600.0
    for _ in range(40):
        await lim.acquire()
        clock.t += 30.0
    assert lim.current_rpm is None or lim.current_rpm > discovered


async def test_a_burst_of_429s_from_one_window_is_counted_once(clock):
    lim = RateLimiter(None, clock=clock, rng=random.Random(0))
    for _ in range(30):
        await lim.acquire()
        clock.t += 1.0
    lim.on_rate_limited(2.0)
    first = lim.current_rpm
    lim.on_rate_limited(2.0)  # the other in-flight requests of the same moment
    lim.on_rate_limited(2.0)
    assert lim.current_rpm == first


def test_backoff_delay_bounded_by_cap_and_growing():
    rng = random.Random(42)
    for attempt in range(12):
        ceiling = min(10.0, 0.5 * 2**attempt)
        for _ in range(50):
            d = backoff_delay(attempt, base=0.5, cap=10.0, rng=rng)
            assert 0.5 * ceiling <= d <= ceiling
    lows = [min(backoff_delay(a, base=1.0, cap=60.0, rng=rng) for _ in range(20)) for a in range(6)]
    assert lows == sorted(lows)


def test_backoff_delay_survives_absurd_attempt_counts():
    d = backoff_delay(5000, base=1.0, cap=60.0, rng=random.Random(0))
    assert 30.0 <= d <= 60.0
    assert 0.5 <= backoff_delay(-3, base=1.0, cap=60.0, rng=random.Random(0)) <= 1.0


async def test_a_429_with_an_announced_reset_pauses_but_imposes_no_rate(clock):
    lim = RateLimiter(None, clock=clock, rng=random.Random(0))
    for _ in range(5):  # a refusal early in a run, after only a few requests
        await lim.acquire()
    t0 = clock()
    lim.on_rate_limited(2.0)
    assert lim.current_rpm is None
    await acquisitions(lim, clock, 50)
    # One pause for the reset, then requests flow freely again instead of 4 or 5 a minute.
    assert clock() <= t0 + 2.5
