"""The circuit breaker: tells an unreachable service from a flaky one, for the whole run.

A request that could not connect (refused, DNS, TLS) surely never left, so it costs nothing and
says nothing about its item: the stages retry it without spending the item's own retries, and a
short outage is ridden out. What ends the run is the breaker: when no keyed request has reached
the service for ``RetryPolicy.unreachable_after_s``, every further try would fail the same way
for hours, so the run stops (exit 3) naming the host. Any answer at all, even a 5xx or a 429,
proves the service reachable and closes the breaker again.

Only keyed API requests are watched: image downloads go to other hosts (a CDN), whose troubles
are the downloader's, and whose URLs are recorded so a later run fetches them for free.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from batchgen.api.outcomes import Outcome, Retryable

__all__ = ["Breaker", "host_of"]


def host_of(base_url: str | None) -> str:
    """The host:port a message names; ``base_url`` may be missing (a test's client has none)."""
    netloc = urlsplit(base_url).netloc if base_url else ""
    return netloc or "the service"


class Breaker:
    def __init__(self, window_s: float, clock: Callable[[], float], host: str, trip: Callable[[str], None]) -> None:
        """``trip``: how the run ends (``StopControl.abort``); called once, with the one line to show."""
        self.window_s = window_s
        self.clock = clock
        self.host = host
        self._trip = trip
        self.down_since: float | None = None  # first connect failure since the service last answered
        self.tripped = False

    @staticmethod
    def never_left(outcome: Outcome) -> bool:
        """A connect-level failure: the request never reached the service (and cannot have been billed)."""
        return isinstance(outcome, Retryable) and not outcome.sent

    def heard(self, outcome: Outcome) -> None:
        """Every keyed request's outcome passes here: any answer closes the breaker, a connect failure
        opens it, and one that comes ``window_s`` after the first ends the run."""
        if not self.never_left(outcome):
            self.down_since = None
            return
        assert isinstance(outcome, Retryable)
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
        down_for = now - self.down_since
        if down_for >= self.window_s and not self.tripped:
            self.tripped = True
            self._trip(
                f"cannot reach {self.host}: no request got through for {down_for:.0f} s (last: {outcome.message}); "
                "nothing was billed since it went down; run the same command again once it is back"
            )
