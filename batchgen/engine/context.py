"""The in-flight context of one run: the parts the stages share, and the outcomes they report.

``Run`` is made of parts with one job each: ``admission`` (concurrency slots, queues, budget),
``stop`` (stop, abort, interrupt) and ``counters`` (what happened in this run). Next to them sit
what every stage reads: the ledger (the truth), the keys (keys.py: a client and a rate limiter
each), the clocks and the latencies learned so far. A stage reports what became of an item
through the ``on_*`` methods, which write the ledger line, count it and free or keep the item's
slot in one place; stages never call each other, they pass ``Job``s over the streams the
composition root (root.py) hands them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batchgen.api.outcomes import RunFatal
from batchgen.engine.admission import Admission
from batchgen.engine.breaker import Breaker, host_of
from batchgen.engine.config import RunConfig
from batchgen.engine.counters import Counters, Snapshot
from batchgen.engine.keys import RETIRING, KeyPool, KeySlot, PoolKey, ServiceClient
from batchgen.engine.limits import RateLimiter
from batchgen.engine.stopping import Pulse, StopControl
from batchgen.store.events import EventKind
from batchgen.store.ledger import Ledger
from batchgen.store.storage import LocalStorage, Storage

__all__ = ["Job", "PoolKey", "Recovering", "Run", "RunOutcome", "ServiceClient"]


class Recovering(Protocol):
    """What the run's recovery (engine/recover.py) takes over from the stages: the account's
    request history is asked before anything is paid for again. Each ``take_*`` answers False when
    it cannot help (no history), and the stage goes on as it would without one."""

    def take_expired(self, job: Job, why: str) -> bool: ...

    def take_lost(self, item: Any, params: dict[str, Any], sent_at: float, why: str, key: int = 0) -> bool: ...

    def note_known(self, request_id: str) -> None: ...


@dataclass
class Job:
    """An item in flight: it holds one concurrency slot until it is downloaded, failed or requeued."""

    item: Any  # manifest.Item
    request_id: str | None = None
    submitted_mono: float = 0.0
    deadline_mono: float = math.inf
    output_url: str | None = None
    polls: int = 0
    errors: int = 0
    last_poll_age: float = 0.0  # seconds after submission of the last poll that found it unfinished
    ready_s: float | None = None  # learned completion time of this job
    requests: int = 0  # keyed requests about it in this run (status and result), 429 answers aside
    not_ready: int = 0  # result answers "not ready yet" after a COMPLETED status
    key: int = 0  # which key of the run's pool made the request: every request about it uses that key


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, for the caller: the exit code to leave with and the summary's numbers."""

    exit_code: int
    reason: str | None
    counts: dict[str, int]
    spent_usd: float


class Run:
    """Shared state of one run, in parts; the stages report outcomes through its ``on_*`` methods."""

    def __init__(
        self,
        cfg: RunConfig,
        items: list[Any],
        out_dir: Path,
        ledger: Ledger,
        client: ServiceClient | Sequence[PoolKey],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        done_before: int = 0,
        storage: Storage | None = None,
    ) -> None:
        """``client``: the one key's client, or the pool of keys (``PoolKey``s, key 0 first);
        ``clock``: monotonic seconds for every schedule of this run; ``wall``: epoch seconds, read
        only to carry a retention deadline across runs; ``done_before``: items an earlier run finished."""
        self.cfg = cfg
        self.items = items
        self.out_dir = out_dir
        self.images_dir = out_dir / "images"
        # Where verified images go (``out_dir`` is its local working folder); the local folder by default.
        self.storage: Storage = LocalStorage(out_dir) if storage is None else storage
        # Awaited between an intent line and its POST (an object store's ledger uploads the intent);
        # a reason it returns stops the run before the POST.
        self.before_post: Callable[[], Awaitable[str | None]] | None = getattr(ledger, "barrier", None)
        self.ledger = ledger
        keys = list(client) if isinstance(client, list | tuple) else [PoolKey(client)]
        self.keys = KeyPool(keys, cfg, clock)
        self.warn: Callable[[str], None] = lambda _message: None  # one line to show (the root sets it)
        self.clock = clock
        self.wall = wall
        changed = Pulse()
        self.stop = StopControl(changed, cfg.interrupt_grace_s)
        self.admission = Admission(cfg, ledger.state, self.stop, changed)
        self.counters = Counters()
        # The client's base URL names the host when the service cannot be reached (a fake has none).
        host = host_of(getattr(self.client, "base_url", None))
        self.breaker = Breaker(cfg.retry.unreachable_after_s, clock, host, self.stop.abort)
        # Seeded from earlier runs' results, so a resume polls well from its first request.
        self.latencies: deque[float] = deque(ledger.state.latencies, maxlen=256)
        # Set by the composition root when the run has a request history to ask (recover.py).
        self.recovery: Recovering | None = None
        self._done_before = done_before
        self._started = clock()

    # --- the keys -----------------------------------------------------------------------------

    @property
    def client(self) -> ServiceClient:
        """Key 0's client: downloads need no key, and a single-key run has only this one."""
        return self.keys.slots[0].client

    @client.setter
    def client(self, client: ServiceClient) -> None:
        self.keys.slots[0].client = client

    @property
    def limiter(self) -> RateLimiter:
        """Key 0's rate limiter (every key's is ``keys.of(i).limiter``)."""
        return self.keys.slots[0].limiter

    def key_of(self, job: Job) -> KeySlot:
        return self.keys.of(job.key)

    def retire_key(self, slot: KeySlot, outcome: RunFatal) -> bool:
        """A key answered 401, 403 or 406 (no credits, spend limit): True when another key goes on.

        The key leaves the run with one warning naming its position and fingerprint. When it was
        the last one, the run ends as a single-key run always did: a key that cannot pay stops the
        submits (what is in flight is finished), a refused one aborts the run, unless another key
        may still read its own requests in flight.
        """
        first = self.keys.retire(slot, outcome)
        if self.keys.live:
            if first:
                self.warn(f"{slot.label} retired for this run: {outcome.message}; the other keys go on"
                          + ("; the requests it made stay in the ledger for a run in which it is accepted"
                             if slot.refused else ""))
            return True
        reason = outcome.message if len(self.keys) == 1 else f"no API key left ({slot.label}: {outcome.message})"
        readers = any(not s.refused for s in self.keys.slots)
        if outcome.kind in ("credits", "spend_limit") or (len(self.keys) > 1 and readers):
            self.stop.stop_submitting(reason)
        else:
            self.stop.abort(reason)
        return False

    def on_fatal(self, job: Job, outcome: RunFatal) -> None:
        """A fatal answer about a request in flight: its key's (401, 403) or the whole run's."""
        if outcome.kind not in RETIRING:
            self.stop.abort(outcome.message)
            return
        slot = self.key_of(job)
        slot.refused = True  # it cannot read this request: it can read none
        self.retire_key(slot, outcome)
        self.unreadable(job)

    def unreadable(self, job: Job) -> bool:
        """True when ``job``'s key was refused in this run: no other key may read its request, so the
        job leaves the run as the ledger has it (in flight), for a run in which the key is accepted."""
        if not self.key_of(job).refused:
            return False
        self.admission.finish()
        return True

    def fingerprint(self, key: int) -> str | None:
        """What the ledger records of key ``key``: its fingerprint, never the key."""
        return self.keys.of(key).fingerprint

    # --- outcomes the stages report -----------------------------------------------------------

    def on_submitted(self, item: Any, request_id: str, key: int = 0) -> Job:
        """The service accepted ``item`` (its request_id is in the ledger): it is in flight now."""
        self.counters.submitted += 1
        self.admission.accepted()
        if self.recovery is not None:
            self.recovery.note_known(request_id)
        now = self.clock()
        return Job(item, request_id, submitted_mono=now,
                   deadline_mono=now + self.cfg.retention_s - self.cfg.retention_margin_s, key=key)

    def on_not_submitted(self) -> None:
        """A submit ended without a request_id and without failing the item (a stop, an abort): it stays pending."""
        self.admission.withdraw()

    def on_submit_failed(
        self, item: Any, error: str, *, retryable: bool, status: int | None = None, uncertain: bool = False
    ) -> None:
        self.record(EventKind.FAILED, item.id, stage="submit", status=status, error=error, retryable=retryable,
                    uncertain=uncertain or None)
        self.counters.failed += 1
        self.admission.withdraw()

    def on_answer_lost(self, item: Any, params: dict[str, Any], sent_at: float, why: str, key: int = 0) -> bool:
        """A submit's answer was lost and the POST may have been accepted: the request history is
        asked (by its body, with the key that sent it) before paying again. True: the recovery has
        the item, which keeps its slot meanwhile; False: there is no history, and the submitter
        retries as before."""
        if self.recovery is None or not self.recovery.take_lost(item, params, sent_at, why, key):
            return False
        self.admission.accepted()
        return True

    def on_recovered(self, item: Any, request_id: str, how: str, *, output_url: str | None = None,
                     cost_usd: float | None = None, submitted_at: str | None = None, key: int = 0) -> None:
        """A request of ``item`` the ledger had no answer for was found in the history (of key
        ``key``) and adopted."""
        self.record(EventKind.RECOVERED, item.id, request_id=request_id, how=how, output_url=output_url,
                    cost_usd=cost_usd, submitted_at=submitted_at, key_fp=self.fingerprint(key))
        self.counters.recovered += 1
        if self.recovery is not None:
            self.recovery.note_known(request_id)

    def on_pay_again(self, item: Any, why: str | None, *, uncertain: bool, resumed: bool) -> None:
        """A submit whose answer never came is sent again: no row of the history matched it after
        the landing wait (``uncertain`` False: it was not billed), or there is no history to ask
        (``uncertain``: it may have been). ``resumed``: its intent is an earlier run's. ``why``
        None writes no line (the ledger already shows an intent without an answer)."""
        if why is not None:
            self.record(EventKind.SUBMIT_RETRY, item.id, error=why, uncertain=uncertain or None)
        if resumed:
            self.counters.uncertain_resubmits += 1
        elif uncertain:
            self.counters.possible_double_charges += 1
        self.admission.requeue(item)

    def on_completed_in_history(self, job: Job, output_url: str, cost_usd: float | None, how: str) -> None:
        """The record expired unread, and the history shows the request COMPLETED: read from there."""
        self.record(EventKind.COMPLETED, job.item.id, request_id=job.request_id, output_url=output_url,
                    cost_usd=cost_usd, how=how)
        self.counters.recovered += 1
        job.output_url = output_url

    def on_still_uncertain(self) -> None:
        """The history could not be asked about a lost submit in time: the item leaves this run as
        it is in the ledger (an intent without an answer), for the next run to check again."""
        self.admission.finish()

    def on_retry(self, *, uncertain: bool = False) -> None:
        """A request is tried again; ``uncertain``: the lost answer may have been an accepted (billed) submit."""
        self.counters.retries += 1
        if uncertain:
            self.counters.possible_double_charges += 1

    def on_poll(self) -> None:
        self.counters.polls += 1

    def on_failed(self, job: Job, stage: str, error: str, *, retryable: bool, **facts: Any) -> None:
        """An item in flight failed in ``stage`` (generate, poll, download); it leaves the pipeline."""
        self.record(EventKind.FAILED, job.item.id, stage=stage, request_id=job.request_id, **facts, error=error,
                    retryable=retryable)
        self.counters.failed += 1
        self.admission.finish()

    def on_expired(self, job: Job, why: str) -> None:
        """The request record is gone (or about to be) unread: the request history says what became
        of it, when the run has one (recover.py); ``expire`` otherwise."""
        if self.recovery is not None and job.request_id and self.recovery.take_expired(job, why):
            return
        self.expire(job, why)

    def expire(self, job: Job, why: str) -> None:
        """The record is gone unread and nothing else knows the request: submit again, a bounded
        number of times.

        Each resubmit is a new, billed job; an item whose generation keeps outliving the
        retention would otherwise be paid for forever.
        """
        item_id = job.item.id
        self.record(EventKind.EXPIRED, item_id, request_id=job.request_id, error=why,
                    note="record expired before it was read; submitting again")
        st = self.ledger.state.items.get(item_id)
        if st is not None and st.expired > self.cfg.retry.max_expiries:
            self.on_failed(job, "poll", f"expired unread {st.expired} times ({why}); not submitting it again",
                           retryable=False)
            return
        self.counters.expired_resubmits += 1
        self.admission.requeue(job.item)

    def on_downloaded(self, job: Job, **facts: Any) -> None:
        self.record(EventKind.DOWNLOADED, job.item.id, request_id=job.request_id, **facts)
        self.counters.downloaded += 1
        self.admission.finish()

    # --- what every stage reads ---------------------------------------------------------------

    def record(self, event: EventKind, item: str | None, **fields: Any) -> None:
        """Append to the ledger; a failed write (disk full) stops the run at the caller's next await."""
        try:
            self.ledger.append(event, item, **fields)
        except OSError as e:
            self.stop.abort(f"cannot write the ledger {self.ledger.path}: {e.strerror or e}")

    def expected_latency(self) -> float:
        if len(self.latencies) >= 3:
            s = sorted(self.latencies)
            return s[len(s) // 2]
        return self.cfg.expected_latency_s

    def deadline_for(self, submitted_wall: float) -> float:
        """Monotonic instant by which the record must have been read (wall time only crosses runs)."""
        remaining = submitted_wall + self.cfg.retention_s - self.wall()
        return self.clock() + remaining - self.cfg.retention_margin_s

    def snapshot(self) -> Snapshot:
        """The numbers a progress display shows; cheap enough to call on every redraw."""
        c = self.counters
        elapsed = max(1e-6, self.clock() - self._started)
        return Snapshot(
            items=len(self.items),
            done=self._done_before + c.downloaded,
            downloaded=c.downloaded,
            failed=c.failed,
            in_flight=self.admission.in_flight + self.admission.submitting,
            spent_usd=self.admission.spent_estimate(),
            per_min=c.downloaded / elapsed * 60,
            rate_limited=self.keys.rate_limited,
        )
