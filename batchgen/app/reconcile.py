"""``batchgen reconcile``: what the account was billed for this folder, against what its ledger says.

Why: the service has no idempotency key, so a lost submit answer or a crash after the POST leaves a
paid request the ledger never heard of, and resuming pays for the item again. The account's request
history knows every accepted request. A billed request belongs to this folder when the ledger knows
its request_id, or when its ``request_body`` equals the parameters of one of the folder's intents
that got no answer (canonical JSON; identical bodies of different items are matched in intent
order, oldest row first, each row used once, and only rows created between the intent and the
item's next ledger line, give or take ``SKEW_S`` of clock difference).

``--adopt`` appends a ``recovered`` event for each billed (or still running) request that is not in
the ledger, so the next run downloads or polls it instead of paying again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.client import Client
from batchgen.api.history import HistoryClient
from batchgen.api.outcomes import (
    HistoryNotFound,
    HistoryRow,
    HistoryRows,
    HistoryUnavailable,
    RunFatal,
    Secret,
)
from batchgen.api.transport import Transport
from batchgen.app.output import open_view, whole_output
from batchgen.app.reconcile_ledgers import Folder, read_folder
from batchgen.app.runner import DEFAULT_BASE_URL, resolve_history_url
from batchgen.app.settings import KEY_VARIABLE, KEYS_FILE_VARIABLE, KEYS_VARIABLE, read_api_keys
from batchgen.app.shards import home_ledger
from batchgen.core.errors import ExitCode, UserError
from batchgen.engine.matching import HOW_BODY, SKEW_S, match_intents
from batchgen.store import events as E
from batchgen.store import ledger as L
from batchgen.store.shards import LEDGER, found_ledgers

__all__ = ["Folder", "Report", "HOW_BODY", "SKEW_S", "main", "match", "read_folder", "reconcile"]

PAD = timedelta(days=1)  # around the ledger's first and last line
MAX_LOOKUPS = 500  # ids the ledger knows but the list did not show, asked one by one


# ---- matching (no I/O) ----------------------------------------------------------------------


@dataclass
class Report:
    billed_usd: float = 0.0
    ledger_usd: float = 0.0
    requests_billed: int = 0
    not_in_ledger: list[dict[str, Any]] = field(default_factory=list)
    not_billed: list[dict[str, Any]] = field(default_factory=list)
    duplicates_paid: list[dict[str, Any]] = field(default_factory=list)
    ledger_requests: int = 0  # request_ids the ledger records as paid
    from_date: str | None = None
    to_date: str | None = None
    history_url: str | None = None
    adopted: int = 0
    keys: int = 1  # how many keys' histories were read
    unread_keys: list[str] = field(default_factory=list)  # fingerprints the ledger names, of keys not given
    found: dict[str, tuple[str, HistoryRow]] = field(default_factory=dict, repr=False)  # rid -> (item, row)

    @property
    def matches(self) -> bool:
        money = abs(self.billed_usd - self.ledger_usd) < 5e-7
        return money and not (self.not_in_ledger or self.not_billed or self.duplicates_paid)

    def to_json(self) -> dict[str, Any]:
        return {
            "billed_usd": self.billed_usd,
            "ledger_usd": self.ledger_usd,
            "requests_billed": self.requests_billed,
            "not_in_ledger": self.not_in_ledger,
            "not_billed": self.not_billed,
            "duplicates_paid": self.duplicates_paid,
            "matches": self.matches,
            "from_date": self.from_date,
            "to_date": self.to_date,
            "history_url": self.history_url,
            "adopted": self.adopted,
            "keys": self.keys,
            "unread_keys": self.unread_keys,
        }


def match(folder: Folder, rows: list[HistoryRow]) -> Report:
    """Which history rows belong to the folder, and how they compare with the ledger."""
    by_id = {r.request_id: r for r in rows}
    belongs: dict[str, str] = {rid: folder.known[rid] for rid in by_id if rid in folder.known}
    adopted: dict[str, str] = {}
    for intent, row in match_intents(folder.intents, rows, folder.known, SKEW_S):  # rows oldest first
        adopted[row.request_id] = belongs[row.request_id] = intent.item
    report = Report(ledger_usd=round(folder.ledger_usd, 6), ledger_requests=len(folder.charged))
    paid: dict[str, list[HistoryRow]] = defaultdict(list)
    for row in rows:  # oldest first, so an item's request_ids are listed in the order they were sent
        rid = row.request_id
        if rid not in belongs:
            continue
        item = belongs[rid]
        report.found[rid] = (item, row)
        if row.billed:
            paid[item].append(row)
            report.billed_usd += row.cost_usd or 0.0
            report.requests_billed += 1
        if rid in adopted and (row.billed or row.status == "PENDING"):
            report.not_in_ledger.append(
                {"request_id": rid, "item": item, "status": row.status, "cost_usd": row.cost_usd}
            )
    report.billed_usd = round(report.billed_usd, 6)
    for rid, item in folder.charged.items():
        row = by_id.get(rid)
        if row is None or not row.billed:
            report.not_billed.append({"request_id": rid, "item": item, "status": row.status if row else None})
    for item, billed in sorted(paid.items()):
        if len(billed) > 1:
            costs = [r.cost_usd or 0.0 for r in billed]
            report.duplicates_paid.append({"item": item, "request_ids": [r.request_id for r in billed],
                                           "cost": round(sum(costs), 6), "extra_usd": round(sum(costs) - max(costs), 6)})
    report.not_in_ledger.sort(key=lambda e: (e["item"], e["request_id"]))
    return report


# ---- asking the history ---------------------------------------------------------------------


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _refusal(got: object, url: str) -> UserError:
    """A history that cannot answer ends the command with exit 3 and one line."""
    if isinstance(got, HistoryUnavailable):
        why = f"the request history is unavailable at {url} ({got.message}); reconcile needs it"
    elif isinstance(got, RunFatal):
        why = got.message
    else:
        why = f"the request history at {url} did not answer: {getattr(got, 'message', got)}"
    return UserError(why, ExitCode.ABORTED)


async def fetch_rows(
    history: HistoryClient,
    folder: Folder,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    asks: Callable[[str], bool] | None = None,
) -> tuple[list[HistoryRow], date, date]:
    """Every request of the folder's days (for its model), plus the known ids the list did not show
    (those ``asks`` accepts: a pool's key is asked only about its own requests)."""
    now = datetime.now(UTC).timestamp()
    first = _day((folder.first_ts if folder.first_ts is not None else now) - PAD.total_seconds())
    last = _day((folder.last_ts if folder.last_ts is not None else now) + PAD.total_seconds())
    todo: list[str | None] = sorted(folder.models)
    if not todo and folder.known:
        # Ledgers do not name the model: the latest known request tells which one to list.
        got = await history.patiently(partial(history.get, next(reversed(folder.known))), sleep)
        if not isinstance(got, HistoryRow | HistoryNotFound):
            raise _refusal(got, history.url)
        todo.append(got.model_name if isinstance(got, HistoryRow) else None)
    rows: dict[str, HistoryRow] = {}
    listed: set[str | None] = set()
    lookups = 0
    for model in todo or [None]:  # grows while lookups find requests of another model
        if model in listed:
            continue
        listed.add(model)
        got = await history.rows_between(first, last, model_name=model, sleep=sleep)
        if not isinstance(got, HistoryRows):
            raise _refusal(got, history.url)
        rows.update(got.by_id())
        for rid in folder.known:
            if rid in rows or lookups >= MAX_LOOKUPS or (asks is not None and not asks(rid)):
                continue
            lookups += 1
            one = await history.patiently(partial(history.get, rid), sleep)
            if isinstance(one, HistoryRow):
                rows[rid] = one
                if model is not None and one.model_name and one.model_name not in listed:
                    todo.append(one.model_name)
            elif not isinstance(one, HistoryNotFound):
                raise _refusal(one, history.url)
    far = datetime.max.replace(tzinfo=UTC)
    ordered = sorted((r for r in rows.values() if r.landed), key=lambda r: (r.created or far, r.request_id))
    return ordered, first, last


async def reconcile(
    out_dir: Path,
    key: Secret | Sequence[Secret],
    *,
    base_url: str | None = None,
    history_url: str | None = None,
    transport: Transport | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Report:
    """``key``: the run's key, or every key of its pool. Each key's history holds only that key's
    requests, so each is read, and asked by id only about the requests the ledger says it sent
    (requests of no known key: the first key)."""
    keys = [key] if isinstance(key, Secret) else list(key)
    folder = read_folder(out_dir)
    url = resolve_history_url(history_url, base_url)
    given = {k.fingerprint for k in keys}
    rows: dict[str, HistoryRow] = {}
    first = last = date.today()
    for n, k in enumerate(keys):

        def asks(rid: str, fp: str = k.fingerprint, lead: bool = n == 0) -> bool:
            owner = folder.key_fps.get(rid)
            return owner == fp or (lead and owner not in given)

        async with Client(base_url or DEFAULT_BASE_URL, k, transport=transport) as client:
            got, first, last = await fetch_rows(HistoryClient.beside(client, url), folder, sleep, asks)
        for row in got:  # one account's keys may each list the same request
            rows.setdefault(row.request_id, row)
    far = datetime.max.replace(tzinfo=UTC)
    report = match(folder, sorted(rows.values(), key=lambda r: (r.created or far, r.request_id)))
    report.from_date, report.to_date, report.history_url = first.isoformat(), last.isoformat(), url
    report.keys = len(keys)
    report.unread_keys = sorted({fp for fp in folder.key_fps.values() if fp not in given})
    return report


def adopt(out_dir: Path, report: Report) -> int:
    """Record every request of ``not_in_ledger`` as ``recovered``, in the ledger of the item's shard
    (``ledger.jsonl`` unsharded); the caller holds the folder lock, which no shard runs beside."""
    home = home_ledger(out_dir)
    by_ledger: dict[Path, list[dict[str, Any]]] = defaultdict(list)
    for entry in report.not_in_ledger:
        by_ledger[home(entry["item"])].append(entry)
    for path, entries in by_ledger.items():
        ledger = L.Ledger(path)
        ledger.open()
        try:
            for entry in entries:
                _, row = report.found[entry["request_id"]]
                done = row.status == "COMPLETED"
                stamp = row.created.isoformat(timespec="milliseconds").replace("+00:00", "Z") if row.created else None
                ledger.write(E.recovered(
                    entry["item"], request_id=row.request_id, how=HOW_BODY,
                    output_url=row.generation_url if done else None,
                    cost_usd=row.cost_usd if row.billed else None, submitted_at=stamp,
                ))
        finally:
            ledger.close()
    return len(report.not_in_ledger)


def format_report(report: Report, out_dir: Path | str, limit: int = 20) -> list[str]:
    """The text form: a short table, then the differences one per line."""
    extra = sum(d["extra_usd"] for d in report.duplicates_paid)
    missing_usd = sum(e["cost_usd"] or 0.0 for e in report.not_in_ledger)
    lines = [
        f"reconcile {out_dir}: request history at {report.history_url}, {report.from_date} .. {report.to_date}",
        f"  {'':<22}{'requests':>9}{'usd':>11}",
        f"  {'billed (history)':<22}{report.requests_billed:>9}{report.billed_usd:>11.4f}",
        f"  {'in the ledger':<22}{report.ledger_requests:>9}{report.ledger_usd:>11.4f}",
        f"  {'not in the ledger':<22}{len(report.not_in_ledger):>9}{missing_usd:>11.4f}",
        f"  {'not billed':<22}{len(report.not_billed):>9}{'':>11}",
        f"  {'items paid twice+':<22}{len(report.duplicates_paid):>9}{extra:>11.4f}  (extra paid)",
    ]
    for e in report.not_in_ledger[:limit]:
        cost = "" if e["cost_usd"] is None else f" ${e['cost_usd']:.4f}"
        lines.append(f"  not in the ledger: {e['request_id']} (item {e['item']}, {e['status']}{cost})")
    for e in report.not_billed[:limit]:
        lines.append(f"  not billed: {e['request_id']} (item {e['item']}, history says {e['status'] or 'nothing'})")
    for d in report.duplicates_paid[:limit]:
        lines.append(f"  paid {len(d['request_ids'])} times: {d['item']} ({', '.join(d['request_ids'])}; ${d['cost']:.4f})")
    if report.unread_keys:
        lines.append(f"  {len(report.unread_keys)} key(s) of this folder's runs were not given "
                     f"({', '.join(report.unread_keys)}): their requests cannot be found; set every key "
                     f"of the run in {KEYS_VARIABLE} or {KEYS_FILE_VARIABLE}")
    if report.matches:
        lines.append("all matches: every billed request of this folder is in its ledger, paid once")
    elif report.adopted:
        lines.append(f"differences found; recorded {report.adopted} request(s) as recovered: the next run "
                     "downloads (or polls) them instead of paying again")
    else:
        lines.append("differences found" + (
            "; --adopt records the requests not in the ledger so the next run downloads them instead of paying again"
            if report.not_in_ledger else ""))
    return lines


def main(
    out_dir: Path,
    *,
    as_json: bool = False,
    adopt_found: bool = False,
    base_url: str | None = None,
    history_url: str | None = None,
    say: Callable[[str], None] = print,
    cache_dir: Path | None = None,
) -> int:
    """The command: 0 when everything matches, 1 for differences; UserError (2, or 3 when the
    history cannot answer or a run holds the folder) otherwise. ``out_dir`` may be an object
    store's URL: its ledgers are read from their local copy (``cache_dir``), and ``--adopt``'s lines
    uploaded as new segments."""
    keys = read_api_keys(os.environ)
    if not keys:
        raise UserError(f"{KEY_VARIABLE} (or {KEYS_VARIABLE} / {KEYS_FILE_VARIABLE} for a pool) is not set: "
                        "reconcile reads your account's request history")
    view = open_view(out_dir, cache_dir)
    remote = not isinstance(out_dir, Path)
    out_dir = view.folder
    if not found_ledgers(out_dir):
        where = f"{view.where}/ledgers" if remote else out_dir / LEDGER
        raise UserError(f"{where}: no ledger here (is this a batchgen output folder?)")
    # --adopt writes the ledger: the run's lock, taken before anything is asked (exit 3 while one runs).
    with whole_output(view.storage) if adopt_found else contextlib.nullcontext():
        report = anyio.run(partial(reconcile, out_dir, [Secret(k) for k in keys], base_url=base_url,
                                   history_url=history_url))
        if adopt_found and report.not_in_ledger:
            report.adopted = adopt(out_dir, report)
    if as_json:
        say(json.dumps(report.to_json(), indent=2))
    else:
        for line in format_report(report, view.where):
            say(line)
    return ExitCode.OK if report.matches else ExitCode.FAILED_ITEMS
