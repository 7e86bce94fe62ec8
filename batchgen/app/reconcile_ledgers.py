"""The ledgers' side of ``batchgen reconcile``: what a folder's ledgers say was sent and paid.

Kept apart from the matching and the history calls (``app.reconcile``); a sharded folder's ledgers
are all read here (``store.shards.found_ledgers``), each with the intent rules a run uses too
(``engine.matching.IntentScan``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.core.errors import UserError
from batchgen.engine.matching import Intent, IntentScan
from batchgen.store import ledger as L
from batchgen.store.events import EventKind
from batchgen.store.shards import LEDGER, found_ledgers

__all__ = ["Folder", "read_folder"]


@dataclass
class Folder:
    intents: list[Intent] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # request_id -> item
    charged: dict[str, str] = field(default_factory=dict)  # request_ids the ledger records as paid -> item
    ledger_usd: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    models: set[str] = field(default_factory=set)  # named by intents, when a ledger records it
    key_fps: dict[str, str] = field(default_factory=dict)  # request_id -> fingerprint of the key that sent it


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
    for _, path in ledgers:
        scan = IntentScan()  # the rules a run uses for its own ledger
        try:
            _read_ledger(path, folder, state, scan)
        except L.LedgerCorrupt as e:
            raise UserError(str(e)) from None
        except OSError as e:
            raise UserError(f"{path}: cannot read the ledger: {e.strerror or e}") from None
        folder.intents.extend(scan.intents)
        for rid, item in scan.known.items():
            folder.known.setdefault(rid, item)
        folder.models |= scan.models
    if len(ledgers) > 1:
        folder.intents.sort(key=lambda it: (it.ts is None, it.ts or 0.0))
    folder.ledger_usd = state.spent_usd
    return folder


def _read_ledger(path: Path, folder: Folder, state: L.LedgerState, scan: IntentScan) -> None:
    for ev in L.readable_events(path):
        L.apply(state, ev)
        ts = _ts(ev)
        if ts is not None:
            folder.first_ts = ts if folder.first_ts is None else min(folder.first_ts, ts)
            folder.last_ts = ts if folder.last_ts is None else max(folder.last_ts, ts)
        scan.feed(ev, ts)
        kind, item, rid = EventKind.of(ev.get("event")), ev.get("item"), ev.get("request_id")
        if not isinstance(item, str):
            continue
        fp = ev.get("key_fp")
        if isinstance(rid, str) and rid and isinstance(fp, str) and fp:
            folder.key_fps[rid] = fp
        cost = ev.get("cost_usd")
        cost = cost if isinstance(cost, int | float) and not isinstance(cost, bool) else None
        paid = kind is EventKind.COMPLETED or (kind is EventKind.RECOVERED and cost is not None)
        if paid and isinstance(rid, str) and rid and (cost is None or cost > 0):
            folder.charged[rid] = item
