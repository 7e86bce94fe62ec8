"""Which request of the account's history answers which intent of a ledger: the one matching rule.

A run uses it before paying again for a submit whose answer was lost (engine/lost.py), and
``batchgen reconcile`` to tell which billed requests belong to a folder; sharing it means the two
can never disagree about whose request a row is.

A row answers an intent when its ``request_body`` is the exact body the intent says was sent
(canonical JSON, so items whose seed the service chose match on the body as sent) and it was
created between the intent and the item's next ledger line, give or take ``skew`` seconds of
clock difference. Identical bodies of different items are matched in intent order, oldest row
first, each row used once; a row whose request_id the ledger already knows is never taken.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from batchgen.api.outcomes import HistoryRow
from batchgen.core.fastjson import canonical_json
from batchgen.store.events import EventKind

__all__ = ["HOW_BODY", "HOW_BY_ID", "SKEW_S", "Intent", "IntentScan", "fits", "match_intents"]

SKEW_S = 300.0  # how far the service's clock and ours may disagree
HOW_BODY = "history-body-match"  # a recovered request found by its body (the ``how`` of the ledger line)
HOW_BY_ID = "history-by-id"  # an expired record read from the history by its request_id
# Lines that name a request of the item: its request_id is known to the ledger from then on.
_ID_EVENTS = frozenset({EventKind.SUBMITTED, EventKind.COMPLETED, EventKind.DOWNLOADED, EventKind.EXPIRED,
                        EventKind.FAILED, EventKind.RECOVERED})


@dataclass
class Intent:
    """A POST the ledger says was about to be sent, and what the ledger heard of it afterwards."""

    item: str
    body: str  # canonical JSON of the parameters sent
    ts: float | None  # epoch seconds of the intent line
    until: float | None = None  # the POST was over by then: the item's next line, or the next run's start
    answered: bool = False  # a request_id was recorded for it
    refused: bool = False  # the service answered without accepting it (nothing was billed)


def fits(row: HistoryRow, intent: Intent, skew: float = SKEW_S) -> bool:
    """Whether ``row`` was created while ``intent``'s POST could have been accepted."""
    if row.created is None:
        return True
    t = row.created.timestamp()
    if intent.ts is not None and t < intent.ts - skew:
        return False
    return intent.until is None or t <= intent.until + skew


def match_intents(
    intents: Iterable[Intent], rows: Iterable[HistoryRow], known: Container[str], skew: float = SKEW_S
) -> list[tuple[Intent, HistoryRow]]:
    """Pairs of an unanswered intent and the row that answers it, in the order of ``intents``.

    ``rows`` oldest first (``merge_rows``' order), one per request; ``known``: request_ids the
    ledger already has, which belong to their items and are never matched again.
    """
    candidates: dict[str, list[HistoryRow]] = defaultdict(list)
    for row in rows:
        if row.request_id not in known and row.request_body is not None:
            candidates[canonical_json(row.request_body)].append(row)
    pairs: list[tuple[Intent, HistoryRow]] = []
    for intent in intents:
        if intent.answered:
            continue
        pool = candidates.get(intent.body, [])
        for i, row in enumerate(pool):
            if fits(row, intent, skew):
                pairs.append((intent, row))
                del pool[i]
                break
    return pairs


@dataclass
class IntentScan:
    """A ledger's intents and known request_ids, fed its lines in order (``feed``)."""

    intents: list[Intent] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # request_id -> item
    only: frozenset[str] | None = None  # keep the intents of these items only (None: every item's)
    models: set[str] = field(default_factory=set)  # named by intents, when a ledger records it
    _waiting: dict[str, Intent] = field(default_factory=dict)  # per item, the intent whose next line has not come
    _by_item: defaultdict[str, list[Intent]] = field(default_factory=lambda: defaultdict(list))

    def feed(self, ev: dict[str, Any], ts: float | None) -> None:
        """One ledger line; ``ts`` its time in epoch seconds (None when unreadable)."""
        kind, item = EventKind.of(ev.get("event")), ev.get("item")
        if kind is EventKind.RUN_START:
            for it in self._waiting.values():  # the process that sent them is gone
                it.until = ts
            self._waiting.clear()
            return
        if not isinstance(item, str):
            return
        closing = self._waiting.pop(item, None)
        if closing is not None:
            closing.until = ts
            if kind in (EventKind.SUBMIT_RETRY, EventKind.FAILED) and not ev.get("uncertain"):
                closing.refused = True  # the service said no (or it was never sent)
        rid = ev.get("request_id")
        if kind in _ID_EVENTS and isinstance(rid, str) and rid:
            self.known.setdefault(rid, item)
        mine = self._by_item.get(item, ())
        if kind is EventKind.INTENT and isinstance(ev.get("params"), dict) and (self.only is None or item in self.only):
            intent = Intent(item, canonical_json(ev["params"]), ts)
            self.intents.append(intent)
            self._by_item[item].append(intent)
            self._waiting[item] = intent
            if isinstance(ev.get("model"), str):
                self.models.add(ev["model"])
        elif kind is EventKind.SUBMITTED and mine:
            mine[-1].answered = True
        elif kind is EventKind.RECOVERED:
            # The request it adopted answered one of the item's open intents: never match that again.
            for it in mine:
                if not it.answered:
                    it.answered = True
                    break

    def open_intents(self, item: str) -> list[Intent]:
        """``item``'s intents since its last answered one that may have been accepted unheard of."""
        out: list[Intent] = []
        for it in reversed(self._by_item.get(item, ())):
            if it.answered:
                break
            if not it.refused:
                out.append(it)
        out.reverse()
        return out
