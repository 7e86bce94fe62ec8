"""How a run asks the account's request history: whether there is one, and each call's retries.

Shared by the two kinds of recovery (recover.py: expired records by id; lost.py: lost submit
answers by body). A run asks the list endpoint once at its start: a host without it (404/405), a
refused key or no such host means no history, said in one warning line, and the run then does
what it did before there was one. Every call goes through the client's ``acquire`` hook, so it
counts against ``--rpm`` when polls do; a 429 pauses as the run's limiter says when it counts.

With several keys, each question goes with the key that made the request it is about (the
history answers a key about its own requests), and counts against that key's limiter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from batchgen.api.outcomes import (
    HistoryOutcome,
    HistoryUnavailable,
    ItemFatal,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.engine.context import Job, Run

__all__ = ["HistoryAccess", "HistorySource"]


class HistorySource(Protocol):
    """The two history calls the engine makes; ``api.history.HistoryClient`` is one."""

    async def list_page(
        self,
        *,
        page: int = 1,
        per_page: int = 100,
        from_date: date | None = None,
        to_date: date | None = None,
        model_name: str | None = None,
        status: str | None = None,
        sort_by: str = "model_created",
        sort_order: str = "asc",
    ) -> HistoryOutcome: ...

    async def get(self, request_id: str) -> HistoryOutcome: ...


class HistoryAccess:
    """The history of one run: the client, whether it answers, the ids the ledger knows, where found
    requests go on (poller, downloader), and who to tell when it turns out there is none."""

    def __init__(self, run: Run, history: HistorySource, *, warn: Callable[[str], None] | None = None) -> None:
        self.run = run
        self.history = history
        self.policy = run.cfg.recovery
        self.warn: Callable[[str], None] = warn or (lambda _message: None)
        self.available: bool | None = None  # None until the probe's answer says
        self.decided = anyio.Event()
        self.closed = False
        # Request ids the ledger has: never adopted for another intent (this run adds its own).
        self.known: set[str] = {st.request_id for st in run.ledger.state.items.values() if st.request_id}
        self.to_poller: MemoryObjectSendStream[Job] | None = None
        self.to_downloader: MemoryObjectSendStream[Job] | None = None
        self.on_change: list[Callable[[], None]] = []  # wakes the tasks waiting for a verdict or the end
        self.on_unavailable: list[Callable[[], None]] = []  # gives back what waits for the history

    def for_key(self, key: int) -> HistorySource:
        """The history as key ``key`` sees it (the run's first history when that key has none)."""
        own = self.run.keys.of(key).history
        return own if own is not None else self.history

    def changed(self) -> None:
        for wake in self.on_change:
            wake()

    async def probe(self) -> None:
        """One list call at run start: a host without the endpoint (404/405) means no history."""
        today = datetime.fromtimestamp(self.run.wall(), UTC).date()
        got = await self.ask(lambda: self.history.list_page(page=1, per_page=1, from_date=today, to_date=today,
                                                            model_name=self.run.cfg.slug))
        match got:
            case HistoryUnavailable() | RunFatal() | ItemFatal():
                self.unavailable(got.message)
            case Retryable(sent=False):
                self.unavailable(f"cannot reach it: {got.message}")
            case _:
                self._decide(True)

    def unavailable(self, why: str) -> None:
        """No history to ask: one warning line, and everything waiting goes the way it went before."""
        if self.available is False:
            return
        self._decide(False)
        self.warn(f"no request history ({why}); a lost submit answer or an expired record is paid for again")
        for give_back in self.on_unavailable:
            give_back()

    def _decide(self, available: bool) -> None:
        self.available = available
        self.decided.set()
        self.changed()

    async def ask(self, call: Callable[[], Awaitable[HistoryOutcome]], key: int = 0) -> HistoryOutcome:
        """``call`` (made with key ``key``), again after a 429 or a transient failure, ``call_tries``
        times at most."""
        tries = 0
        while True:
            got = await call()
            tries += 1
            if tries >= self.policy.call_tries or not isinstance(got, RateLimited | Retryable):
                return got
            if isinstance(got, Retryable) and not got.sent:
                return got  # nothing reached the host: the caller decides (the probe gives up on it)
            await anyio.sleep(self.pause_after(got, tries, key))

    def pause_after(self, got: RateLimited | Retryable, tries: int, key: int = 0) -> float:
        """How long to wait before the next question after ``got`` (an answer to key ``key``)."""
        if isinstance(got, RateLimited):
            if self.run.cfg.rpm_scope == "all":
                return self.run.keys.of(key).limiter.on_rate_limited(got.reset_in)
            if got.reset_in is not None:
                return min(self.run.cfg.retry.rate_limit_max_pause_s, got.reset_in)
        return self.policy.recheck(tries)
