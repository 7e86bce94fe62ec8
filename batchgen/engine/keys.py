"""The run's API keys: one client and one rate limiter per key, and which key does what.

A team with several keys (or one key per shard) wants every one of them busy, so ``--rpm`` is per
key and each key paces its own requests. A submit goes out with the key that can take a request
soonest (``KeyPool.pick``); every later request about that job (status, result, the request
history) goes with the same key, because the service answers a request only to the key that made
it: another key's poll reads as "not found", which would look like an expired record and pay again.

The engine never sees a key. It holds the client that sends it and a short fingerprint (written on
``intent``, ``submitted`` and ``recovered`` lines), by which a resumed run finds the key of each
request it takes over. A key the service refuses (401) or that cannot pay (406) is retired for the
rest of the run; the others go on, and the run stops only when none is left.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from batchgen.api.outcomes import Outcome, RunFatal
from batchgen.engine.config import RunConfig
from batchgen.engine.limits import RateLimiter

__all__ = ["KeyPool", "KeySlot", "PoolKey", "ServiceClient", "RETIRING", "REFUSING"]

# The fatal answers that end one key's part in the run rather than the whole run.
RETIRING = frozenset({"auth", "credits", "spend_limit", "forbidden"})
# Of those, the ones after which the key cannot even read its own requests.
REFUSING = frozenset({"auth"})


class ServiceClient(Protocol):
    """What the engine asks of the service; ``api.client.Client`` is one, a test's fake another."""

    async def submit(self, slug: str, params: dict[str, Any]) -> Outcome: ...

    async def status(self, request_id: str) -> Outcome: ...

    async def result(self, request_id: str) -> Outcome: ...

    def download(self, url: str) -> AbstractAsyncContextManager[Any]:
        """An open GET of an image URL (``status``, ``content_length``, ``content.iter_chunked``)."""
        ...


Acquire = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class PoolKey:
    """One key as the caller hands it to the engine: the client that sends it, never the key.

    ``fingerprint``: a short non-reversible id of the key, written to the ledger (None writes
    nothing: a test's fake). ``history``: makes this key's request-history client, given the hook
    that puts its calls under this key's rate limiter. ``retired``: why the key may not submit
    from the start (a refusal at the balance check); ``refused``: nor read its own requests.
    """

    client: ServiceClient
    fingerprint: str | None = None
    history: Callable[[Acquire | None], Any] | None = None
    retired: str | None = None
    refused: bool = False


class KeySlot:
    """One key of a running pool: its client, its limiter, and whether it is still in the run."""

    def __init__(self, index: int, key: PoolKey, limiter: RateLimiter, of: int) -> None:
        self.index = index
        self.client = key.client
        self.fingerprint = key.fingerprint
        self.make_history = key.history
        self.history: Any = None  # this key's HistorySource, once the composition root made it
        self.limiter = limiter
        self.retired: str | None = key.retired
        self.refused = key.refused
        self._of = of

    @property
    def label(self) -> str:
        """How messages name the key: its position and fingerprint, never the key."""
        fp = f" ({self.fingerprint})" if self.fingerprint else ""
        return f"key {self.index + 1} of {self._of}{fp}"

    def __repr__(self) -> str:
        return f"KeySlot({self.label}, retired={self.retired is not None})"


class KeyPool:
    """The run's keys in the order given; key 0 is the one a single-key run has always had."""

    def __init__(self, keys: Sequence[PoolKey], cfg: RunConfig, clock: Callable[[], float] = time.monotonic) -> None:
        if not keys:
            raise ValueError("a run needs at least one key")
        self.slots = [
            KeySlot(i, k, RateLimiter(cfg.rpm, clock=clock, retry=cfg.retry), len(keys)) for i, k in enumerate(keys)
        ]
        self._clock = clock
        self._by_fp = {s.fingerprint: s.index for s in self.slots if s.fingerprint}

    def __len__(self) -> int:
        return len(self.slots)

    def of(self, index: int) -> KeySlot:
        """The slot of a job's key index (an index out of range is key 0: a job made by hand)."""
        return self.slots[index] if 0 <= index < len(self.slots) else self.slots[0]

    def index_of(self, fingerprint: str | None) -> int | None:
        """Which key of this pool made a request the ledger names by ``fingerprint``.

        A request recorded without one (a ledger from before fingerprints) is key 0's: such a
        ledger was written by the single ``SEGMIND_API_KEY``. None: the key is not in this pool.
        """
        if not fingerprint:
            return 0
        return self._by_fp.get(fingerprint)

    @property
    def live(self) -> list[KeySlot]:
        """The keys that may still submit."""
        return [s for s in self.slots if s.retired is None]

    def pick(self) -> KeySlot | None:
        """The live key whose limiter can take a request soonest; None when every key is retired.

        Ties (no limit known, no pause) go to the key that has sent the fewest requests, so an
        unlimited run spreads its submits evenly and meets each key's service limit late.
        """
        live = self.live
        if not live:
            return None
        now = self._clock()
        return min(live, key=lambda s: (max(now, s.limiter.ready_at()), s.limiter.requests, s.index))

    def retire(self, slot: KeySlot, outcome: RunFatal) -> bool:
        """Take ``slot`` out of the run after a fatal answer; True the first time (say it once)."""
        if outcome.kind in REFUSING:
            slot.refused = True
        if slot.retired is not None:
            return False
        slot.retired = outcome.message
        return True

    @property
    def rate_limited(self) -> int:
        return sum(s.limiter.rate_limited for s in self.slots)
