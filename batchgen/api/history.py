"""The account's request history (segmind 1.3.0 ``generations.history()`` / ``generations.get()``).

Why a worker reads it: the service has no idempotency key, so a submit whose answer was lost, or a
request whose 1-hour record expired unread, can only be found again here (the history keeps every
age, and the output file outlives the record by days). It lives on its own host in production
(``api.spotprod.segmind.com``); a ``--base-url`` server such as the sandbox serves both.

The key goes to that configured host only, through the same rules as every other keyed call
(``Client.at``: paths from our own constants, no redirect followed, an echoed key redacted). The
page envelope is undocumented, so reading is liberal: a bare list or the list under
``data``/``rows``/``items``/``results``; ``request_body`` as an object or a JSON string; timestamps
as ISO 8601, HTTP dates or epoch numbers; rows whose fields are still null (not landed yet); and a
request listed once per output (de-duplicated on request_id).

Single calls (``list_page``, ``get``) return their outcome as is, and call ``acquire`` first when
given, so a run can put them under its rate limiter; ``rows_between`` walks a whole time range and
waits out 429s (by the reset header) and transient failures itself, a bounded number of times.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any

import anyio

from batchgen.api import protocol as P
from batchgen.api.client import Client
from batchgen.api.outcomes import (
    HistoryNotFound,
    HistoryOutcome,
    HistoryPage,
    HistoryRow,
    HistoryRows,
    HistoryUnavailable,
    ItemFatal,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.api.wire import error_text, extract_image, number, reset_delay, short
from batchgen.core import fastjson

__all__ = [
    "HISTORY_URL",
    "MAX_PER_PAGE",
    "WINDOW_DAYS",
    "HistoryClient",
    "merge_rows",
    "parse_page",
    "parse_row",
    "parse_time",
    "windows",
]

HISTORY_URL = "https://api.spotprod.segmind.com"
MAX_PER_PAGE = 100
WINDOW_DAYS = 31  # calendar days per list query: from_date and to_date at most 30 apart, inside the 31-day cap
MAX_PAGES = 5_000  # per window: 500,000 rows is a runaway server, not an account
RATE_WAITS = 8  # 429s waited out per call before giving up
RETRIES = 4  # transient failures (5xx, timeouts) retried per call
_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_ENVELOPE_KEYS = ("data", "rows", "items", "results")
_CREATED = ("created_at", "model_created", "createdAt", "created", "submitted_at", "timestamp")
_UPDATED = ("updated_at", "model_updated", "updatedAt", "updated", "completed_at")
_STATUS = {
    "COMPLETED": "COMPLETED", "SUCCEEDED": "COMPLETED", "SUCCESS": "COMPLETED",
    "FAILED": "FAILED", "ERROR": "FAILED",
    "PENDING": "PENDING", "QUEUED": "PENDING", "PROCESSING": "PENDING", "IN_PROGRESS": "PENDING",
}


# ---- reading what the service answers -------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (``Z`` or an offset; naive is UTC), an HTTP date, or epoch seconds / milliseconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return parse_time(float(text))
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            dt = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return dt.astimezone(UTC) if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _body(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = fastjson.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _first(row: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def parse_row(row: Any, request_id: str | None = None) -> HistoryRow | None:
    """One row; None when it names no request. ``request_id``: the id asked for, when the row omits it."""
    if not isinstance(row, dict):
        return None
    rid = _first(row, ("request_id", "requestId"))
    rid = rid if isinstance(rid, str) and rid else request_id
    if rid is None:
        return None
    raw_status = _first(row, ("model_status", "status"))
    status = _STATUS.get(raw_status.strip().upper(), "PENDING") if isinstance(raw_status, str) and raw_status else None
    url = row.get("generation_url")
    model = row.get("model_name")
    error = row.get("error")
    return HistoryRow(
        request_id=rid,
        status=status,
        model_name=model if isinstance(model, str) and model else None,
        cost_usd=number(row.get("credits_deduction")),
        request_body=_body(row.get("request_body")),
        generation_url=extract_image({"url": url}) if url else None,
        latency_ms=number(row.get("latency_ms")),
        error=error_text(error, str(error)) if error not in (None, "") else None,
        created=parse_time(_first(row, _CREATED)),
        updated=parse_time(_first(row, _UPDATED)),
    )


def _row_list(body: Any) -> list[Any] | None:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in _ENVELOPE_KEYS:
            inner = body.get(key)
            if isinstance(inner, list):
                return inner
            if isinstance(inner, dict):  # {"data": {"rows": [...], "total": n}}
                found = _row_list(inner)
                if found is not None:
                    return found
    return None


def _total(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    for scope in (body, body.get("data"), body.get("meta"), body.get("pagination")):
        if isinstance(scope, dict):
            for key in ("total", "total_count", "totalCount", "count"):
                v = scope.get(key)
                if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                    return v
    return None


def parse_page(body: Any, page: int, per_page: int) -> HistoryPage | None:
    """A list answer in any envelope; None when it holds no list of rows."""
    rows = _row_list(body)
    if rows is None:
        return None
    parsed = tuple(r for r in (parse_row(x) for x in rows) if r is not None)
    return HistoryPage(parsed, page, per_page, _total(body))


def _rank(row: HistoryRow) -> int:
    return 0 if row.status is None else 1 if row.status == "PENDING" else 2


def merge_rows(rows: Iterable[HistoryRow]) -> list[HistoryRow]:
    """One row per request, oldest first: the most advanced one when a request shows up again
    (one row per output, or a later page or window seeing it further along)."""
    best: dict[str, HistoryRow] = {}
    for row in rows:
        seen = best.get(row.request_id)
        if seen is None or _rank(row) > _rank(seen):
            best[row.request_id] = row
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(best.values(), key=lambda r: (r.created or far, r.request_id))


def windows(first: date, last: date, days: int = WINDOW_DAYS) -> list[tuple[date, date]]:
    """``first``..``last`` (both included) cut into back-to-back windows of at most ``days`` days."""
    out = []
    start = first
    while start <= last:
        end = min(last, start + timedelta(days=days - 1))
        out.append((start, end))
        start = end + timedelta(days=1)
    return out


# ---- the calls ------------------------------------------------------------------------------


class HistoryClient:
    """The two history calls over a ``Client`` pointed at the history host (``beside`` makes one)."""

    def __init__(self, api: Client, *, acquire: Callable[[], Awaitable[None]] | None = None) -> None:
        self._api = api
        self._acquire = acquire

    @classmethod
    def beside(
        cls, client: Client, history_url: str, *, acquire: Callable[[], Awaitable[None]] | None = None
    ) -> HistoryClient:
        """The history of ``client``'s key at ``history_url``, over the same transport."""
        url = history_url.rstrip("/")
        return cls(client if url == client.base_url else client.at(url), acquire=acquire)

    @property
    def url(self) -> str:
        return self._api.base_url

    def __repr__(self) -> str:
        return f"HistoryClient(url={self.url!r})"

    async def _get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        if self._acquire is not None:
            await self._acquire()
        return await self._api.get_json(path, query)

    def _refused(self, status: int, body: Any, text: str, headers: Any) -> HistoryOutcome:
        said = f"HTTP {status}: {error_text(body, text)}"
        if status == 429:
            return RateLimited(reset_delay(headers), said)
        if status == 401:
            return RunFatal("auth", f"the request history refused the API key ({said}); check SEGMIND_API_KEY", status)
        if status == 403:
            return RunFatal("forbidden", f"the request history is not open to this key ({said})", status)
        if status in (404, 405) or 300 <= status < 400:
            return HistoryUnavailable(f"no request history at {self.url} ({said})", status)
        if status >= 500 or status == 408:
            return Retryable(said, status)
        return ItemFatal(said, status)

    async def list_page(
        self,
        *,
        page: int = 1,
        per_page: int = MAX_PER_PAGE,
        from_date: date | None = None,
        to_date: date | None = None,
        model_name: str | None = None,
        status: str | None = None,
        sort_by: str = "model_created",
        sort_order: str = "asc",
    ) -> HistoryOutcome:
        """One page; oldest first by default, so rows landing meanwhile join the end, not shift pages."""
        query = {"page": str(page), "per_page": str(per_page), "sort_by": sort_by, "sort_order": sort_order}
        if from_date is not None:
            query["from_date"] = from_date.isoformat()
        if to_date is not None:
            query["to_date"] = to_date.isoformat()
        if model_name:
            query["model_name"] = model_name
        if status:
            query["status"] = status
        got = await self._get(P.REQUEST_HISTORY, query)
        if isinstance(got, Retryable):
            return got
        code, body, text, headers = got
        if not 200 <= code < 300:
            return self._refused(code, body, text, headers)
        parsed = parse_page(body, page, per_page)
        if parsed is None:
            return HistoryUnavailable(f"{self.url} answered the history list with no rows ({short(text, 80)})", code)
        return parsed

    async def get(self, request_id: str) -> HistoryOutcome:
        """One request by id, of any age; its fields are null while the record has not landed."""
        if not _ID.fullmatch(request_id) or request_id in (".", ".."):
            return HistoryNotFound(request_id[:40], "not a request id")
        got = await self._get(P.path(P.REQUEST_HISTORY_ITEM, request_id=request_id))
        if isinstance(got, Retryable):
            return got
        code, body, text, headers = got
        if code == 404:
            return HistoryNotFound(request_id, f"HTTP 404: {error_text(body, text)}")
        if not 200 <= code < 300:
            return self._refused(code, body, text, headers)
        inner = body.get("data") if isinstance(body, dict) and isinstance(body.get("data"), dict) else body
        if isinstance(inner, list) and len(inner) >= 1:  # a list of the request's rows (one per output)
            rows = [r for r in (parse_row(x, request_id) for x in inner) if r is not None]
            return merge_rows(rows)[0] if rows else HistoryRow(request_id)
        row = parse_row(inner, request_id)
        if row is None:
            return Retryable(f"HTTP {code}: unreadable history row ({short(text, 80)})", code)
        return row

    async def patiently(
        self, call: Callable[[], Awaitable[HistoryOutcome]], sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    ) -> HistoryOutcome:
        """``call`` again after a 429 (waiting for its reset) or a transient failure, a bounded number of times."""
        waits = retries = 0
        while True:
            got = await call()
            if isinstance(got, RateLimited) and waits < RATE_WAITS:
                pause = got.reset_in if got.reset_in is not None else min(60.0, 2.0**waits)
                waits += 1
            elif isinstance(got, Retryable) and retries < RETRIES:
                pause = min(30.0, 2.0**retries)
                retries += 1
            else:
                return got
            await sleep(max(pause, 0.05))

    async def rows_between(
        self,
        first: date,
        last: date,
        *,
        model_name: str | None = None,
        per_page: int = MAX_PER_PAGE,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> HistoryOutcome:
        """Every request created from ``first`` to ``last`` (UTC days, both included), one row each:
        ``HistoryRows``, or the outcome that stopped the walk."""
        found: list[HistoryRow] = []
        pages = 0
        for start, end in windows(first, last):
            previous: list[str] | None = None
            listed = 0
            for page in range(1, MAX_PAGES + 1):
                call = partial(
                    self.list_page, page=page, per_page=per_page, from_date=start, to_date=end, model_name=model_name
                )
                got = await self.patiently(call, sleep)
                if not isinstance(got, HistoryPage):
                    return got
                pages += 1
                ids = [r.request_id for r in got.rows]
                found.extend(got.rows)
                listed += len(got.rows)
                if not got.rows or ids == previous:  # the end, or a server repeating its last page
                    break
                if got.total is not None and listed >= got.total:
                    break
                if got.total is None and len(got.rows) < per_page:
                    break
                previous = ids
            else:
                return Retryable(f"the history listed more than {MAX_PAGES} pages for {start}..{end}")
        return HistoryRows(tuple(merge_rows(found)), pages)
