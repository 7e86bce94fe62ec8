"""The fold: what the ledger's events add up to, item by item and for the whole folder.

A run, a resume and every reader (status, exports, report) fold the same lines through ``apply``,
so they can never disagree about where an item stands.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from batchgen.store.events import EventKind, Phase
from batchgen.store.itemstate import ItemState

__all__ = ["ItemState", "LedgerState", "apply", "fold", "parse_ts"]


def parse_ts(ts: str) -> float:
    """Seconds since the epoch of a ledger timestamp (UTC wall time: the only clock a resume can share)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@dataclass
class LedgerState:
    items: dict[str, ItemState] = field(default_factory=dict)
    lines: int = 0
    torn_tail: bool = False
    spent_usd: float = 0.0  # from metrics.cost where the service reported one
    completed_without_cost: int = 0
    runs: int = 0
    submits: int = 0  # accepted submits of all items: budgets read it per submit, so it is kept, not summed
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    def get(self, item: str) -> ItemState:
        st = self.items.get(item)
        if st is None:
            st = self.items[item] = ItemState(item)
        return st


def _ts(ev: dict[str, Any]) -> float | None:
    try:
        return parse_ts(ev["ts"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


_KIND: dict[str, EventKind] = {k.value: k for k in EventKind}
_fromiso = datetime.fromisoformat
_NO_TS = object()
_NUMBER = (int, float)


class _K:
    """The kinds as plain class attributes: in ``apply`` an Enum's own attribute lookup (each
    ``case`` makes one) costs four times as much, and a replay makes millions."""

    INTENT, SUBMITTED, COMPLETED, DOWNLOADED = (EventKind.INTENT, EventKind.SUBMITTED,
                                                EventKind.COMPLETED, EventKind.DOWNLOADED)
    EXPIRED, SUPERSEDED, FAILED = EventKind.EXPIRED, EventKind.SUPERSEDED, EventKind.FAILED
    SUBMIT_RETRY, RECOVERED = EventKind.SUBMIT_RETRY, EventKind.RECOVERED
    RUN_START, RUN_END = EventKind.RUN_START, EventKind.RUN_END


class _P:
    """The phases, likewise."""

    PENDING, INTENT, SUBMITTED = Phase.PENDING, Phase.INTENT, Phase.SUBMITTED
    COMPLETED, DOWNLOADED, FAILED = Phase.COMPLETED, Phase.DOWNLOADED, Phase.FAILED


def apply(state: LedgerState, ev: dict[str, Any]) -> None:
    """Fold one event into the state. Unknown kinds are ignored so newer ledgers still replay
    (an item they name still counts as known).

    A resume replays four lines per item, four million for a million-row prompts file: the common
    kinds come first and the lookups are inlined."""
    name = ev.get("event")
    kind = _KIND.get(name) if name.__class__ is str else EventKind.of(name)
    if kind is _K.RUN_START:
        state.runs += 1
        return
    name = ev.get("item")
    if not isinstance(name, str):
        return
    items = state.items
    st = items.get(name)
    if st is None:
        st = items[name] = ItemState(name)
    if kind is None:
        return
    match kind:
        case _K.INTENT:
            if st.state == _P.INTENT:
                st.uncertain += 1
            st.state = _P.INTENT
            st.intents += 1
            st.params_sha = ev.get("params_sha", st.params_sha)
            fp = ev.get("key_fp")  # _fp(ev), its usual case first
            st.key_fp = (_FPS.get(fp) if fp.__class__ is str else None) or _fp(ev)
        case _K.SUBMITTED:
            st.state = _P.SUBMITTED
            st.request_id = ev.get("request_id")
            ts = ev.get("ts", _NO_TS)
            st.submitted_ts = None if ts is _NO_TS else _fromiso(ts.replace("Z", "+00:00")).timestamp()  # parse_ts
            fp = ev.get("key_fp")
            st.key_fp = (_FPS.get(fp) if fp.__class__ is str else None) or _fp(ev) or st.key_fp
            st.submits += 1
            state.submits += 1
            st.error = None
        case _K.COMPLETED:
            st.state = _P.COMPLETED
            st.output_url = ev.get("output_url")
            st.paid = True
            ready = ev.get("ready_s")
            if isinstance(ready, _NUMBER) and not isinstance(ready, bool) and ready >= 0:
                state.latencies.append(float(ready))
            cost = ev.get("cost_usd")
            if isinstance(cost, _NUMBER):
                total = (st.cost_usd or 0.0) + float(cost)  # a float, never -0.0
                st.cost_usd = _COSTS.setdefault(total, total) if len(_COSTS) < 4096 else total
                state.spent_usd += float(cost)
            else:
                state.completed_without_cost += 1
            st.error = None
        case _K.DOWNLOADED:
            st.state = _P.DOWNLOADED
            st.file = ev.get("file")
            st.sha256 = ev.get("sha256")
            st.bytes = ev.get("bytes")
            try:  # _ts(ev)
                st.downloaded_ts = _fromiso(ev["ts"].replace("Z", "+00:00")).timestamp()
            except (KeyError, TypeError, ValueError, AttributeError):
                st.downloaded_ts = None
            st.file_params_sha = st.params_sha
            st.error = None
        case _K.EXPIRED:
            # The request record is gone unread; the item will be submitted again.
            st.state = _P.PENDING
            st.expired += 1
            st.request_id = None
        case _K.SUPERSEDED:
            # The item's image was moved aside before a new one, from edited parameters, takes its place.
            if ev.get("was") == st.file:
                st.file = st.sha256 = st.bytes = st.downloaded_ts = st.file_params_sha = None
                if st.state == _P.DOWNLOADED:
                    st.state = _P.COMPLETED if st.output_url else _P.PENDING
        case _K.FAILED:
            if ev.get("uncertain"):
                st.uncertain += 1
            st.state = _P.FAILED
            st.error = ev.get("error")
            st.retryable = bool(ev.get("retryable"))
        case _K.SUBMIT_RETRY:
            # The POST was refused (429, 5xx) or its answer was lost; the item waits for another try.
            if ev.get("uncertain"):
                st.uncertain += 1
            if st.state == _P.INTENT:
                st.state = _P.PENDING
        case _K.RECOVERED:
            _recovered(state, st, ev)
        case _K.RUN_START | _K.RUN_END:
            pass  # run-level lines (a run_start is counted above); item states are already folded
        case _:
            assert_never(kind)


_FPS: dict[str, str] = {}  # a run has a few keys: one string per fingerprint, not one per item
_COSTS: dict[float, float] = {}  # and a few prices: one float per amount, not one per item


def _fp(ev: dict[str, Any]) -> str | None:
    fp = ev.get("key_fp")
    if not (isinstance(fp, str) and fp):
        return None
    shared = _FPS.get(fp)
    if shared is None:
        if len(_FPS) >= 1024:
            return fp
        shared = _FPS[fp] = fp
    return shared


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _recovered(state: LedgerState, st: ItemState, ev: dict[str, Any]) -> None:
    """An accepted (so billable) request found in the history. An item still waiting for one takes
    it as ``submitted`` would, or as ``completed`` when it carries the output URL. An item that
    already has a request of its own (in flight, completed, downloaded) keeps it: the recovered one
    only adds its submit and its cost, so the ledger's spend matches what was billed."""
    st.submits += 1
    state.submits += 1
    cost = _number(ev.get("cost_usd"))
    url = ev.get("output_url")
    if cost is not None:
        st.cost_usd = (st.cost_usd or 0.0) + cost
        state.spent_usd += cost
        st.paid = True
    if st.state not in (Phase.PENDING, Phase.INTENT, Phase.FAILED):
        return
    st.request_id = ev.get("request_id")
    st.key_fp = _fp(ev)
    st.error = None
    if isinstance(url, str) and url:
        st.state = Phase.COMPLETED
        st.output_url = url
        st.paid = True
        if cost is None:
            state.completed_without_cost += 1
        return
    st.state = Phase.SUBMITTED
    st.submitted_ts = None
    for key in ("submitted_at", "ts"):
        try:
            st.submitted_ts = parse_ts(ev[key])
            break
        except (KeyError, TypeError, ValueError):
            continue


def fold(events: Iterable[dict[str, Any]]) -> LedgerState:
    state = LedgerState()
    for ev in events:
        apply(state, ev)
    return state
