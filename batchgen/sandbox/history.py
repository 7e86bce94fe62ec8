"""The account's request history, per API key, as the official SDK documents it (segmind 1.3.0).

Why it exists: a worker that lost a submit's answer, or whose 1-hour request record expired while
it was down, must be able to find out what the service accepted and billed instead of paying
again. So every accepted submit gets a history record at once, including submits whose answer
was dropped by the ``lost`` fault, and records outlive the 1-hour retention (any age resolves).

What a reader sees, given ``history_lag`` (scaled by ``time_scale``): the history trails the
service by the lag, showing each request as it was ``lag`` seconds ago.

- Before ``submitted + lag`` the record has not landed: the list leaves it out, and
  ``GET …/request-history/{id}`` answers 200 with ``request_id`` and every other field null.
- Until ``finished + lag`` the row is ``PENDING`` (cost, latency, output URL and error null).
- Then ``COMPLETED`` (``credits_deduction`` = the price charged, ``generation_url`` set) or
  ``FAILED`` (``credits_deduction`` 0, ``error`` set). Once visible, a row never disappears.

A COMPLETED request appears ``history_outputs`` times in the list, each row with the full cost
(the real service lists one row per output); PENDING and FAILED requests appear once. The list
answers ``{"data": [...], "page", "per_page", "total"}``; the SDK leaves the envelope undocumented.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from batchgen.api import protocol as P
from batchgen.sandbox.state import Job, SandboxState, utc_iso

__all__ = ["HistoryQuery", "HistoryRecord", "HistoryStore", "QueryError", "add_history_routes", "parse_query"]

STATUSES = ("COMPLETED", "FAILED", "PENDING")
SORT_BY = ("model_created", "model_name", "credits_deduction")
SORT_ORDER = ("desc", "asc")
DEFAULT_DAYS = 7
MAX_WINDOW_DAYS = 31
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

_FIELDS = (
    "request_id",
    "model_name",
    "model_status",
    "credits_deduction",
    "request_body",
    "generation_url",
    "latency_ms",
    "error",
    "created_at",
    "updated_at",
)

# The shared gate of keyed requests (key, rate limit, faults) → (key, early answer, pending fault).
Gate = Callable[[web.Request, str], Awaitable[tuple[str | None, web.Response | None, str | None]]]


class QueryError(ValueError):
    """A list query the service refuses with 400; the message becomes the ``error`` field."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    page: int = 1
    per_page: int = 20
    from_date: date | None = None
    to_date: date | None = None
    model_name: str | None = None
    status: str | None = None
    sort_by: str = "model_created"
    sort_order: str = "desc"


def _positive_int(params: Mapping[str, str], name: str, default: int, top: int | None = None) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    bound = f"between 1 and {top}" if top is not None else "an integer >= 1"
    if not (raw.isascii() and raw.isdigit()):
        raise QueryError(f"{name} must be {bound}, got {raw!r}")
    value = int(raw)
    if value < 1 or (top is not None and value > top):
        raise QueryError(f"{name} must be {bound}, got {raw!r}")
    return value


def _date(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise QueryError(f"{name} must be a date as YYYY-MM-DD, got {raw!r}") from None


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise QueryError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def parse_query(params: Mapping[str, str], today: date) -> HistoryQuery:
    """Validate a list query; the date window defaults to the last 7 days and spans at most 31."""
    to_date = _date(params, "to_date") or today
    from_date = _date(params, "from_date") or to_date - timedelta(days=DEFAULT_DAYS)
    if from_date > to_date:
        raise QueryError(f"from_date {from_date} is after to_date {to_date}")
    if (to_date - from_date).days > MAX_WINDOW_DAYS:
        raise QueryError(f"the date window may span at most {MAX_WINDOW_DAYS} days, got {from_date} to {to_date}")
    return HistoryQuery(
        page=_positive_int(params, "page", 1),
        per_page=_positive_int(params, "per_page", 20, top=100),
        from_date=from_date,
        to_date=to_date,
        model_name=params.get("model_name") or None,
        status=_choice(params, "status", STATUSES, None),
        sort_by=_choice(params, "sort_by", SORT_BY, "model_created") or "model_created",
        sort_order=_choice(params, "sort_order", SORT_ORDER, "desc") or "desc",
    )


@dataclass(slots=True)
class HistoryRecord:
    """What the service remembers of one accepted submit; decided at submission, like the job itself."""

    request_id: str
    key: str
    slug: str
    raw_body: str
    params: dict[str, Any]
    submitted: float
    done_at: float
    error: str | None
    price_micro: int
    file_name: str


class HistoryStore:
    """Every accepted submit of every key, never pruned (the emulator's lifetime is a test's)."""

    def __init__(self, state: SandboxState) -> None:
        self.s = state
        # Wall-clock seconds = clock instant + offset, fixed once so that timestamps and dates of a
        # record never drift between two reads (a test's hand-driven clock stands still).
        self.offset = time.time() - state.now()
        self._by_id: dict[str, HistoryRecord] = {}
        self._by_key: dict[str, list[HistoryRecord]] = {}

    def record(self, job: Job, raw_body: str) -> None:
        """Called for each accepted submit, before its answer is sent (or lost)."""
        rec = HistoryRecord(
            request_id=job.id,
            key=job.key,
            slug=job.slug,
            raw_body=raw_body,
            params=job.params,
            submitted=job.submitted,
            done_at=job.done_at,
            error=job.error,
            price_micro=job.price_micro,
            file_name=job.file_name,
        )
        self._by_id[rec.request_id] = rec
        self._by_key.setdefault(rec.key, []).append(rec)

    def find(self, key: str, request_id: str) -> HistoryRecord | None:
        """Only the caller's own requests resolve; another key's id is as unknown as a made-up one."""
        rec = self._by_id.get(request_id)
        return rec if rec is not None and rec.key == key else None

    # -- what a reader sees ---------------------------------------------------------------------
    def _lag(self) -> float:
        return self.s.config.scaled(self.s.config.history_lag)

    def status_at(self, rec: HistoryRecord, now: float) -> str | None:
        """``None`` while the record has not landed, then PENDING, then COMPLETED or FAILED."""
        lag = self._lag()
        if now < rec.submitted + lag:
            return None
        if now < rec.done_at + lag:
            return "PENDING"
        return "FAILED" if rec.error is not None else "COMPLETED"

    def _stamp(self, wall: float) -> str:
        if self.s.config.history_dates == "http":
            return format_datetime(datetime.fromtimestamp(wall, UTC), usegmt=True)
        return utc_iso(wall)

    def row(self, rec: HistoryRecord, now: float, base_url: str) -> dict[str, Any]:
        """One row as served at clock instant ``now``; URLs are built on ``base_url``."""
        status = self.status_at(rec, now)
        if status is None:
            return dict.fromkeys(_FIELDS) | {"request_id": rec.request_id}
        final = status != "PENDING"
        lag = self._lag()
        cost = None if not final else (rec.price_micro / 1_000_000 if status == "COMPLETED" else 0.0)
        return {
            "request_id": rec.request_id,
            "model_name": rec.slug,
            "model_status": status,
            "credits_deduction": cost,
            "request_body": rec.raw_body if self.s.config.history_body == "string" else rec.params,
            "generation_url": f"{base_url}/files/{rec.file_name}" if status == "COMPLETED" else None,
            "latency_ms": round((rec.done_at - rec.submitted) * 1000) if final else None,
            "error": rec.error if status == "FAILED" else None,
            "created_at": self._stamp(rec.submitted + self.offset),
            "updated_at": self._stamp((rec.done_at if final else rec.submitted) + lag + self.offset),
        }

    def today(self, now: float) -> date:
        return datetime.fromtimestamp(now + self.offset, UTC).date()

    def rows(self, key: str, q: HistoryQuery, now: float, base_url: str) -> list[dict[str, Any]]:
        """Every landed row of ``key`` matching the query, sorted, before pagination."""
        outputs = self.s.config.history_outputs
        needle = q.model_name.lower() if q.model_name else None
        picked: list[tuple[HistoryRecord, dict[str, Any]]] = []
        for rec in self._by_key.get(key, ()):
            status = self.status_at(rec, now)
            if status is None or (q.status is not None and status != q.status):
                continue
            if needle is not None and needle not in rec.slug.lower():
                continue
            day = datetime.fromtimestamp(rec.submitted + self.offset, UTC).date()
            if (q.from_date is not None and day < q.from_date) or (q.to_date is not None and day > q.to_date):
                continue
            row = self.row(rec, now, base_url)
            picked.extend((rec, row) for _ in range(outputs if status == "COMPLETED" else 1))

        def sort_key(item: tuple[HistoryRecord, dict[str, Any]]) -> tuple[Any, ...]:
            rec, row = item
            if q.sort_by == "model_name":
                return (rec.slug, rec.submitted, rec.request_id)
            if q.sort_by == "credits_deduction":
                return (row["credits_deduction"] or 0.0, rec.submitted, rec.request_id)
            return (rec.submitted, rec.request_id)

        picked.sort(key=sort_key, reverse=q.sort_order == "desc")
        return [dict(row) for _, row in picked]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def add_history_routes(app: web.Application, store: HistoryStore, gate: Gate) -> None:
    """Serve both history endpoints on ``app`` unless the history is off (then they are plain 404s)."""
    if not store.s.config.history:
        return

    def base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def listing(request: web.Request) -> web.StreamResponse:
        key, early, _ = await gate(request, "history")
        if early is not None:
            return early
        assert key is not None
        now = store.s.now()
        try:
            q = parse_query(request.query, store.today(now))
        except QueryError as exc:
            return _error(400, str(exc))
        rows = store.rows(key, q, now, base_url(request))
        start = (q.page - 1) * q.per_page
        body = {"data": rows[start : start + q.per_page], "page": q.page, "per_page": q.per_page, "total": len(rows)}
        return web.json_response(body)

    async def one(request: web.Request) -> web.StreamResponse:
        key, early, _ = await gate(request, "history")
        if early is not None:
            return early
        assert key is not None
        request_id = request.match_info["request_id"]
        rec = store.find(key, request_id)
        if rec is None:
            return _error(404, f"Request {request_id} not found")
        now = store.s.now()
        return web.json_response(store.row(rec, now, base_url(request)))

    app.router.add_get(P.REQUEST_HISTORY, listing)
    app.router.add_get(P.REQUEST_HISTORY_ITEM, one)
