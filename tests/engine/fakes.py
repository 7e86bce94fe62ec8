"""Building blocks for engine unit tests: a scripted client, a run on a ledger in a folder, items.

No socket anywhere: the engine depends on the client's method signatures only, so a fake that
hands back outcome values stands in for the service. Time is a ``FakeClock`` read by the run, or,
for a whole run (whose poller waits for real), a ``Clock`` that each request moves a second on.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.outcomes import Outcome
from batchgen.engine.config import RetryPolicy, RunConfig
from batchgen.engine.context import Run, RunOutcome
from batchgen.engine.root import run_batch
from batchgen.manifest import Item
from batchgen.store.ledger import Ledger, readable_events
from tests.support.sandbox import FakeClock

# No waiting between tries and no pause after a 429: the outcome table, not the backoff, is under test.
NO_WAIT = RetryPolicy(backoff_base_s=0.0, rate_limit_backoff_base_s=0.0, rate_limit_max_pause_s=0.0)
WALL_OFFSET = 1.7e9  # the run's wall clock is its monotonic fake clock shifted to a plausible epoch


def item(n: int | str, **params: Any) -> Item:
    name = n if isinstance(n, str) else f"item-{n:03d}"
    return Item(id=name, params={"prompt": f"prompt {name}", **params}, index=0, line=1)


class FakeResponse:
    """What ``client.download`` yields: a status, a length and the body in chunks."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status = status
        self.content_length = len(body)
        self.content = self
        self._body = body

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), n):
            yield self._body[i : i + n]


class FakeClient:
    """Hands out scripted answers, one per call, per method; records every call.

    A method whose script ran out repeats ``then`` (its last answer by default), so a test
    scripts only the answers that matter. ``base_url`` is what the engine names when it cannot connect.
    """

    base_url = "https://api.example.test"

    def __init__(
        self,
        submit: Iterable[Outcome] = (),
        status: Iterable[Outcome] = (),
        result: Iterable[Outcome] = (),
        images: dict[str, bytes] | None = None,
    ) -> None:
        self.scripts: dict[str, deque[Outcome]] = {"submit": deque(submit), "status": deque(status), "result": deque(result)}
        self.last: dict[str, Outcome | None] = {"submit": None, "status": None, "result": None}
        self.images = images or {}
        self.calls: list[tuple[str, Any]] = []

    def _answer(self, method: str, arg: Any) -> Outcome:
        self.calls.append((method, arg))
        script = self.scripts[method]
        if script:
            self.last[method] = script.popleft()
        answer = self.last[method]
        assert answer is not None, f"no answer scripted for {method}"
        return answer

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    async def submit(self, slug: str, params: dict[str, Any]) -> Outcome:
        return self._answer("submit", params)

    async def status(self, request_id: str) -> Outcome:
        return self._answer("status", request_id)

    async def result(self, request_id: str) -> Outcome:
        return self._answer("result", request_id)

    @contextlib.asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[FakeResponse]:
        self.calls.append(("download", url))
        body = self.images.get(url)
        yield FakeResponse(body) if body is not None else FakeResponse(b"", status=404)


class Clock:
    """Real monotonic time (the poller waits for real) plus a second for every request made."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


class ClockedClient(FakeClient):
    """Each request takes a second of the run's clock; more than ``limit`` requests is a loop."""

    def __init__(self, clock: Clock, limit: int = 2000, **scripts: Any) -> None:
        super().__init__(**scripts)
        self.clock, self.limit = clock, limit

    def _answer(self, method: str, arg: Any) -> Outcome:
        self.clock.skew += 1.0
        assert len(self.calls) < self.limit, f"{len(self.calls)} requests: the run is looping"
        return super()._answer(method, arg)


async def run_clocked(folder: Path, client: ClockedClient, items: list[Item], **cfg: Any) -> RunOutcome:
    """``run_batch`` over ``items`` to its end, on the client's clock; ``cfg`` overrides ``RunConfig`` fields."""
    config = RunConfig(**{"slug": "test-model", "price_usd": 0.5, "expected_latency_s": 0.001, "retry": NO_WAIT, **cfg})
    ledger = open_ledger(folder)
    try:
        with anyio.fail_after(20):
            return await run_batch(config, items, folder, ledger, client, handle_signals=False, clock=client.clock,
                                   wall=lambda: WALL_OFFSET + client.clock())
    finally:
        ledger.close()


def open_ledger(folder: Path) -> Ledger:
    ledger = Ledger(folder / "ledger.jsonl")
    ledger.open()
    return ledger


def make_run(
    folder: Path,
    client: FakeClient,
    clock: FakeClock,
    items: list[Item] | None = None,
    *,
    ledger: Ledger | None = None,
    **cfg: Any,
) -> Run:
    """A run over ``items`` with a ledger in ``folder``; ``cfg`` overrides ``RunConfig`` fields."""
    config = RunConfig(**{"slug": "test-model", "price_usd": 0.5, "retry": NO_WAIT, **cfg})
    return Run(
        config,
        items or [],
        folder,
        ledger or open_ledger(folder),
        client,
        clock=clock,
        wall=lambda: WALL_OFFSET + clock(),
    )


def events(run: Run, item_id: str | None = None) -> list[dict[str, Any]]:
    """The ledger's events (of one item, if given), as a later run would read them."""
    evs = list(readable_events(run.ledger.path))
    return [ev for ev in evs if item_id is None or ev.get("item") == item_id]


def kinds(run: Run, item_id: str | None = None) -> list[str]:
    return [ev["event"] for ev in events(run, item_id)]
