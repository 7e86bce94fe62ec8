"""Submits whose answer never came: found in the account's history by their body, or paid again.

A submit is uncertain when its POST may have been accepted without the ledger hearing of it: the
answer was lost in a live run (a dropped connection, a 2xx without a request id), or an earlier
run died between its ``intent`` line and the answer. Paying again then may pay twice, since the
service has no idempotency key. Instead the item waits here, keeping its concurrency slot, while
one task lists the account's history around the intents it holds (one listing serves every item
waiting, newest first, for the run's model) and matches each intent's exact body with the rules
of engine/matching.py, shared with ``batchgen reconcile``. A match is adopted (a ``recovered``
ledger line saying how) and goes on to the poller or the downloader. Only when no row matches
once the record has had ``RecoveryPolicy.landing_wait_s`` to land, counted from the intent, is
the item submitted again; a history that does not answer for ``patience_s`` leaves the item
uncertain for the next run rather than risk paying twice. With several keys, each item is looked
for in the history of the key that sent it (one listing per key with items waiting); an earlier
run's intent made with a key this run does not have is looked for with key 0.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.history import MAX_PER_PAGE, merge_rows, windows
from batchgen.api.outcomes import (
    HistoryOutcome,
    HistoryPage,
    HistoryRow,
    HistoryRows,
    HistoryUnavailable,
    Retryable,
    RunFatal,
)
from batchgen.core.fastjson import canonical_json
from batchgen.engine.asking import HistoryAccess
from batchgen.engine.context import Job
from batchgen.engine.matching import HOW_BODY, Intent, IntentScan, match_intents
from batchgen.engine.waiting import wait_event
from batchgen.store.ledger import LedgerCorrupt, parse_ts, readable_events

__all__ = ["LostSubmits", "scan_ledger"]


@dataclass
class _Entry:
    item: Any
    intents: list[Intent] | None  # None until the ledger scan names them (an earlier run's intent)
    resumed: bool
    why: str
    next_at: float  # monotonic: the next listing it needs
    tries: int = 0
    trouble_since: float | None = None  # monotonic: since when the history has not answered
    key: int = 0  # the key that sent it: its history is the one to ask


class _Known:
    """Request ids the ledger has (its lines, and this run's): never adopted for another intent."""

    def __init__(self, *sets: Any) -> None:
        self.sets = sets

    def __contains__(self, rid: object) -> bool:
        return any(rid in s for s in self.sets)


def scan_ledger(path: Path, items: frozenset[str] = frozenset()) -> IntentScan:
    """The intents of ``items`` and every known request id, read once (in a thread: it can be large)."""
    scan = IntentScan(only=items)
    try:
        for ev in readable_events(path):
            try:
                ts: float | None = parse_ts(ev["ts"])
            except (KeyError, TypeError, ValueError):
                ts = None
            scan.feed(ev, ts)
    except (LedgerCorrupt, OSError):
        pass  # what was read still counts; an item with no intent found is sent again
    return scan


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z") if dt is not None else None


def _newest_first_and_older_than(rows: tuple[HistoryRow, ...], cutoff: float) -> bool:
    """The page is sorted newest first and ends before ``cutoff``: later pages hold older rows only."""
    times = [r.created.timestamp() if r.created is not None else None for r in rows]
    if not times or any(t is None for t in times):
        return False
    return all(a >= b for a, b in itertools.pairwise(times)) and times[-1] < cutoff  # type: ignore[operator]


class LostSubmits:
    """Items whose submit may have been accepted unheard of, waiting for the history to say."""

    def __init__(self, access: HistoryAccess) -> None:
        self.rec = access
        self.run = access.run
        self.policy = access.policy
        self.entries: dict[str, _Entry] = {}
        self.scan: IntentScan | None = None
        self._lost: Counter[str] = Counter()  # lost answers per item in this run
        self.resumed: frozenset[str] = frozenset()  # items whose earlier intents the ledger scan keeps
        self._wake = anyio.Event()
        access.on_change.append(self.wake)
        access.on_unavailable.append(self.give_back)

    # --- intake --------------------------------------------------------------------------------

    def add_live(self, item: Any, params: dict[str, Any], sent_at: float, why: str, key: int = 0) -> None:
        """This run's POST (with key ``key``) lost its answer; ``sent_at``: epoch seconds just before it was sent."""
        self._lost[item.id] += 1
        intent = Intent(item.id, canonical_json(params), sent_at, until=self.run.wall())
        self.entries[item.id] = _Entry(item, [intent], False, f"answer lost ({why})", self.run.clock(), key=key)
        self.wake()

    def add_resumed(self, item: Any) -> None:
        if item.id not in self.resumed:  # not expected up front: the ledger is read again for it
            self.resumed |= {item.id}
            self.scan = None
        st = self.run.ledger.state.items.get(item.id)
        key = self.run.keys.index_of(st.key_fp if st is not None else None)
        self.entries[item.id] = _Entry(item, None, True, "an earlier run sent it and never heard back",
                                       self.run.clock(), key=key or 0)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def give_back(self) -> None:
        """There is no history to ask: every waiting item is sent again, as it was before one."""
        for entry in list(self.entries.values()):
            self._pay_again(entry, verified=False)

    # --- the task ------------------------------------------------------------------------------

    async def serve(self) -> None:
        """List the history whenever a waiting item needs it; ends once closed and idle."""
        while True:
            self._wake = anyio.Event()
            if self.rec.closed and not self.entries:
                return
            now = self.run.clock()
            due = min((e.next_at for e in self.entries.values()), default=math.inf)
            if self.rec.available and due <= now:
                await self.sweep()
                continue
            await wait_event(self._wake, due - now if self.rec.available else math.inf)

    async def sweep(self) -> None:
        """One listing per key for every waiting item: adopt what matches, pay again what had time to land."""
        run = self.run
        if self.scan is None:
            wanted = self.resumed
            scan = await anyio.to_thread.run_sync(scan_ledger, run.ledger.path, wanted)
            self.scan = scan if self.resumed == wanted else None  # one more came meanwhile: read again
        else:
            scan = self.scan
        for entry in list(self.entries.values()):
            if entry.intents is None and scan.only is not None and entry.item.id in scan.only:
                entry.intents = scan.open_intents(entry.item.id)
                if not entry.intents:
                    self._pay_again(entry, verified=False)  # no body on record to look for
        entries = [e for e in self.entries.values() if e.intents]
        for key in sorted({e.key for e in entries}):
            await self._sweep_key(key, [e for e in entries if e.key == key], scan)

    async def _sweep_key(self, key: int, entries: list[_Entry], scan: IntentScan) -> None:
        """The listing of key ``key``'s history for the items it sent."""
        run, policy = self.run, self.policy
        entries = [e for e in entries if self.entries.get(e.item.id) is e]
        if not entries or not self.rec.available:
            return
        now_wall = run.wall()
        stamps = [i.ts if i.ts is not None else now_wall for e in entries for i in e.intents or ()]
        listed_at = now_wall
        got = await self.rows_since(min(stamps) - policy.skew_s, key)
        now = run.clock()
        entries = [e for e in entries if self.entries.get(e.item.id) is e]  # still waiting (no fallback meanwhile)
        match got:
            case HistoryRows():
                pass
            case HistoryUnavailable() | RunFatal():
                self.rec.unavailable(got.message)
                return
            case _:
                self._trouble(entries, now, getattr(got, "message", repr(got)))
                return
        intents = sorted((i for e in entries for i in e.intents or ()), key=lambda i: i.ts or now_wall)
        found: defaultdict[str, list[HistoryRow]] = defaultdict(list)
        for intent, row in match_intents(intents, got.rows, _Known(self.rec.known, scan.known), policy.skew_s):
            found[intent.item].append(row)
        for entry in entries:
            if self.entries.get(entry.item.id) is not entry:
                continue
            rows = found.get(entry.item.id)
            if rows:
                await self._adopt(entry, rows)
                continue
            entry.trouble_since = None
            newest = max(i.ts if i.ts is not None else listed_at for i in entry.intents or ())
            landed_by = newest + policy.landing_wait_s
            if listed_at >= landed_by:
                self._pay_again(entry, verified=True, waited=listed_at - newest)
            else:
                entry.tries += 1
                # The deciding listing must start after the wait: a moment past it, not before.
                entry.next_at = now + min(policy.recheck(entry.tries), landed_by - run.wall() + 0.05)

    async def rows_since(self, cutoff: float, key: int = 0) -> HistoryOutcome:
        """The run model's requests created after ``cutoff`` (epoch s), newest first, one row each,
        in the history of key ``key``."""
        run, policy = self.run, self.policy
        first = datetime.fromtimestamp(cutoff, UTC).date()
        last = datetime.fromtimestamp(run.wall() + policy.skew_s, UTC).date()
        rows: list[HistoryRow] = []
        pages = 0
        for start, end in reversed(windows(first, last)):
            previous: list[str] | None = None
            for page in itertools.count(1):
                call = partial(self.rec.for_key(key).list_page, page=page, per_page=MAX_PER_PAGE, from_date=start,
                               to_date=end, model_name=run.cfg.slug, sort_by="model_created", sort_order="desc")
                got = await self.rec.ask(call, key)
                if not isinstance(got, HistoryPage):
                    return got
                pages += 1
                rows.extend(got.rows)
                ids = [r.request_id for r in got.rows]
                if not got.rows or ids == previous:
                    break
                if _newest_first_and_older_than(got.rows, cutoff):
                    return HistoryRows(tuple(merge_rows(rows)), pages)
                if got.total is not None and page * got.per_page >= got.total:
                    break
                if got.total is None and len(got.rows) < got.per_page:
                    break
                if pages >= policy.max_pages:
                    return Retryable(f"the request history listed more than {pages} pages since the intent")
                previous = ids
        return HistoryRows(tuple(merge_rows(rows)), pages)

    # --- outcomes ------------------------------------------------------------------------------

    async def _adopt(self, entry: _Entry, rows: list[HistoryRow]) -> None:
        """The item's request is found: record it (and any further one, each billed) and go on."""
        run, item = self.run, entry.item
        del self.entries[item.id]
        row = rows[0]
        done = row.status == "COMPLETED" and bool(row.generation_url)
        for i, r in enumerate(rows):
            paid = r.status == "COMPLETED" and r.billed
            run.on_recovered(item, r.request_id, HOW_BODY, output_url=r.generation_url if i == 0 and done else None,
                             cost_usd=r.cost_usd if paid else None, submitted_at=_iso(r.created), key=entry.key)
        if done:
            assert self.rec.to_downloader is not None and row.generation_url is not None
            await self.rec.to_downloader.send(Job(item=item, request_id=row.request_id, output_url=row.generation_url,
                                                  key=entry.key))
        elif row.status == "FAILED":
            run.on_failed(Job(item=item, request_id=row.request_id), "generate",
                          f"generation FAILED: {row.error or 'no reason given'}", retryable=False)
        else:
            created = row.created.timestamp() if row.created is not None else run.wall()
            job = Job(item=item, request_id=row.request_id, key=entry.key)
            job.submitted_mono = run.clock() - max(0.0, run.wall() - created)
            job.deadline_mono = max(run.deadline_for(created), run.clock())
            assert self.rec.to_poller is not None
            await self.rec.to_poller.send(job)

    def _pay_again(self, entry: _Entry, *, verified: bool, waited: float = 0.0) -> None:
        """No request of the history is this item's (``verified``), or there is no history: send it again."""
        run, item = self.run, entry.item
        self.entries.pop(item.id, None)
        if not verified:
            run.on_pay_again(item, None if entry.resumed else f"{entry.why}; no request history to check",
                             uncertain=True, resumed=entry.resumed)
            return
        lost = self._lost[item.id]
        if not entry.resumed and lost > run.cfg.retry.submit_retries:
            run.on_failed(Job(item=item), "submit", f"{entry.why}, {lost} times, and never in the request history "
                          "(the next run tries again)", retryable=True)
            return
        run.on_pay_again(item, f"{entry.why}; no request in the history matches it {waited:.0f} s after it was "
                         "sent: submitting again", uncertain=False, resumed=entry.resumed)

    def _trouble(self, entries: list[_Entry], now: float, message: str) -> None:
        """The listing failed: ask again later; past ``patience_s`` the item stays uncertain for the next run."""
        given_up = []
        for entry in entries:
            if entry.trouble_since is None:
                entry.trouble_since = now
            if now - entry.trouble_since >= self.policy.patience_s:
                self.entries.pop(entry.item.id, None)
                self.run.on_still_uncertain()
                given_up.append(entry.item.id)
                continue
            entry.tries += 1
            entry.next_at = now + self.policy.recheck(entry.tries)
        if given_up:
            self.rec.warn(
                f"the request history did not answer for {self.policy.patience_s:.0f} s ({message}); "
                f"{len(given_up)} item(s) left uncertain ({', '.join(given_up[:5])}"
                f"{', ...' if len(given_up) > 5 else ''}): the next run checks them before paying"
            )
