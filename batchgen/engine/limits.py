"""Request-rate control shared by every stage, adapting to 429 answers.

One ``RateLimiter`` per key gates every request that counts against that key (keys.py). With
``--rpm`` it spaces requests so that no 60-second window holds more than the limit; without it,
requests go out freely until the first 429, after which the observed rate (less a margin) becomes
the limit and is raised again slowly while the service stays quiet. A 429 pauses every request of
that key until the reset time the service announced, or an exponential backoff with jitter when
it announced none.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable

import anyio

from batchgen.engine.config import RetryPolicy, backoff_delay

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        rpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``clock``: the run's monotonic clock; ``retry``: the pause cap and the backoff of a 429 with no reset."""
        self.configured_rpm = rpm
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._interval = self._interval_for(rpm) if rpm else 0.0
        self._next_at = 0.0
        self._blocked_until = 0.0
        self._lock = anyio.Lock()
        self._recent: deque[float] = deque()
        self._consecutive_429 = 0
        self._last_429 = -1e18
        self.rate_limited = 0  # 429s seen over the run
        self.requests = 0

    @staticmethod
    def _interval_for(rpm: float) -> float:
        # Interval slightly above 60/n, n the whole number of requests allowed: a window of 60 s
        # then never holds more than rpm requests (7.5 RPM allows 7 in a minute, not 8).
        n = math.floor(rpm) if rpm >= 1 else rpm
        return 60.0 / max(n - 0.5, n * 0.95, 0.01)

    @property
    def current_rpm(self) -> float | None:
        return 60.0 / self._interval if self._interval else None

    def ready_at(self) -> float:
        """The instant (the run's clock) from which ``acquire`` would not wait: a key pool sends
        each submit with the key that is free soonest."""
        return max(self._blocked_until, self._next_at) if self._interval else self._blocked_until

    async def acquire(self) -> None:
        """Wait for the right to send one counted request."""
        if not self._interval and not self._lock.locked() and self._clock() >= self._blocked_until:
            # No limit known and no pause: the common case of an unlimited run skips the lock.
            self._count(self._clock())
            return
        async with self._lock:
            while True:
                now = self._clock()
                wait = max(self._blocked_until, self._next_at) - now
                if wait <= 0:
                    break
                await anyio.sleep(wait)
            now = self._clock()
            if self._interval:
                self._next_at = max(now, self._next_at) + self._interval
                self._maybe_recover(now)
            self._count(now)

    def _count(self, now: float) -> None:
        self.requests += 1
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 60.0:
            self._recent.popleft()

    def _maybe_recover(self, now: float) -> None:
        """Without a configured limit, creep back up after a quiet minute so one 429 is not forever."""
        if self.configured_rpm is None and now - self._last_429 > 60.0:
            self._interval *= 0.9
            self._last_429 = now - 30.0  # next step at the earliest 30 s later
            if self._interval < 0.01:
                self._interval = 0.0

    def on_success(self) -> None:
        self._consecutive_429 = 0

    def on_rate_limited(self, reset_in: float | None) -> float:
        """Pause every counted request; returns the pause in seconds."""
        now = self._clock()
        self.rate_limited += 1
        self._consecutive_429 += 1
        if reset_in is not None:
            pause = min(self._retry.rate_limit_max_pause_s, reset_in + self._rng.uniform(0.0, 0.25))
        else:
            p = self._retry
            pause = backoff_delay(
                self._consecutive_429 - 1, base=p.rate_limit_backoff_base_s, cap=p.rate_limit_backoff_cap_s, rng=self._rng
            )
        self._blocked_until = max(self._blocked_until, now + pause)
        if self.configured_rpm is None and reset_in is None and now - self._last_429 > 1.0:
            # No reset time announced: the requests of the last minute are what the service's
            # per-minute window held when it refused, so that count less a margin is the limit.
            # With a reset time, pausing until it is enough and costs no throughput; a 429 that
            # was not about the rate (a transient refusal early in a run) then cannot throttle
            # the run to a crawl.
            observed = len([t for t in self._recent if t >= now - 60.0])
            rpm = max(1.0, observed * 0.9)
            new_interval = self._interval_for(rpm)
            self._interval = max(self._interval, new_interval)
        self._last_429 = now
        return pause
