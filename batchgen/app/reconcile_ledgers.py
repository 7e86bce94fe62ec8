"""The ledgers' side of ``batchgen reconcile``: what a folder's ledgers say was sent and paid.

Kept apart from the matching and the history calls (``app.reconcile``); a sharded folder's ledgers
are all read here (``store.shards.found_ledgers``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.core.errors import UserError
from batchgen.core.fastjson import canonical_json
from batchgen.store import ledger as L
from batchgen.store.events import EventKind
from batchgen.store.shards import LEDGER, found_ledgers

__all__ = ["Folder", "Intent", "read_folder"]

_ID_EVENTS = (EventKind.SUBMITTED, EventKind.COMPLETED, EventKind.DOWNLOADED, EventKind.EXPIRED,
              EventKind.FAILED, EventKind.RECOVERED)


@dataclass
class Intent:
    item: str
    body: str  # canonical JSON of the parameters sent
    ts: float | None
    until: float | None = None  # the POST was over by then: the item's next line, or the next run's start
    answered: bool = False  # a request_id was recorded for it


@dataclass
class Folder:
    intents: list[Intent] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # request_id -> item
    charged: dict[str, str] = field(default_factory=dict)  # request_ids the ledger records as paid -> item
    ledger_usd: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    models: set[str] = field(default_factory=set)  # named by intents, when a ledger records it


def _ts(ev: dict[str, Any]) -> float | None:
    try:
        return L.parse_ts(ev["ts"])
    except (KeyError, TypeError, ValueError):
        return None


def read_folder(out_dir: Path) -> Folder:
    """The ledgers' side: intents, known and paid request_ids, the spend and the time span.

    A sharded folder's ledgers are read one after another (the unsharded one first, as the older
    history); each shard's runs close only that shard's open intents, and the intents of all are
    matched in the order they were written.
    """
    ledgers = found_ledgers(out_dir)
    if not ledgers:
        raise UserError(f"{out_dir / LEDGER}: no ledger here (is this a batchgen output folder?)")
    folder = Folder()
    state = L.LedgerState()
    by_item: dict[str, list[Intent]] = defaultdict(list)
    for _, path in ledgers:
        try:
            _read_ledger(path, folder, state, by_item)
        except L.LedgerCorrupt as e:
            raise UserError(str(e)) from None
        except OSError as e:
            raise UserError(f"{path}: cannot read the ledger: {e.strerror or e}") from None
    if len(ledgers) > 1:
        folder.intents.sort(key=lambda it: (it.ts is None, it.ts or 0.0))
    folder.ledger_usd = state.spent_usd
    return folder


def _read_ledger(path: Path, folder: Folder, state: L.LedgerState, by_item: dict[str, list[Intent]]) -> None:
    waiting: dict[str, Intent] = {}  # per item, the intent whose outcome line has not come yet
    for ev in L.readable_events(path):
        L.apply(state, ev)
        ts = _ts(ev)
        if ts is not None:
            folder.first_ts = ts if folder.first_ts is None else min(folder.first_ts, ts)
            folder.last_ts = ts if folder.last_ts is None else max(folder.last_ts, ts)
        kind, item = EventKind.of(ev.get("event")), ev.get("item")
        if kind is EventKind.RUN_START:
            for it in waiting.values():  # the process that sent them is gone
                it.until = ts
            waiting.clear()
            continue
        if not isinstance(item, str):
            continue
        if item in waiting:
            waiting.pop(item).until = ts
        rid = ev.get("request_id")
        if kind in _ID_EVENTS and isinstance(rid, str) and rid:
            folder.known.setdefault(rid, item)
        if kind is EventKind.INTENT and isinstance(ev.get("params"), dict):
            intent = Intent(item, canonical_json(ev["params"]), ts)
            folder.intents.append(intent)
            by_item[item].append(intent)
            waiting[item] = intent
            if isinstance(ev.get("model"), str):
                folder.models.add(ev["model"])
        elif kind is EventKind.SUBMITTED and by_item[item]:
            by_item[item][-1].answered = True
        elif kind is EventKind.RECOVERED:
            # The request it adopted answered one of the item's open intents: never match that again.
            for it in by_item[item]:
                if not it.answered:
                    it.answered = True
                    break
        cost = ev.get("cost_usd")
        cost = cost if isinstance(cost, int | float) and not isinstance(cost, bool) else None
        paid = kind is EventKind.COMPLETED or (kind is EventKind.RECOVERED and cost is not None)
        if paid and isinstance(rid, str) and rid and (cost is None or cost > 0):
            folder.charged[rid] = item
