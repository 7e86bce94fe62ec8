"""What an answer of the service means, as types: the stages decide from a type, never a status code.

Also the ``Secret`` that carries the API key, so no outcome, repr or log line can show it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchgen.api.redact import MASK, key_pattern, min_echo

__all__ = [
    "Accepted",
    "Credits",
    "Expired",
    "HistoryNotFound",
    "HistoryOutcome",
    "HistoryPage",
    "HistoryRow",
    "HistoryRows",
    "HistoryUnavailable",
    "ItemFatal",
    "JobResult",
    "JobStatus",
    "Outcome",
    "RateLimited",
    "Retryable",
    "RunFatal",
    "Secret",
    "Trouble",
]


FINGERPRINT_SALT = b"batchgen key fingerprint v1\x00"


class Secret:
    """Holds the API key so that no repr, log line or exception text can show it."""

    __slots__ = ("_pattern", "_runs", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._pattern: re.Pattern[str] | None = None
        n = min_echo(value)
        self._runs = tuple(value[i : i + n] for i in range(len(value) - n + 1)) if value else ()

    def reveal(self) -> str:
        return self._value

    @property
    def fingerprint(self) -> str:
        """12 hex digits of a salted SHA-256 of the key: names a key in the ledger and in messages
        (which key made a request) without a way back to the key."""
        return hashlib.sha256(FINGERPRINT_SALT + self._value.encode()).hexdigest()[:12]

    def redact(self, text: str) -> str:
        """``text`` with every echo of the key masked: whole, escaped, or a long enough part of it."""
        if not self._value or not text:
            return text
        if "\\" not in text and "%" not in text:
            # No escapes: a plain look for the key's runs is enough, and cheap on every answer.
            if not any(run in text for run in self._runs):
                return text
        if self._pattern is None:
            self._pattern = key_pattern(self._value)
        return self._pattern.sub(MASK, text)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


# ---- outcomes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    request_id: str


@dataclass(frozen=True)
class JobStatus:
    """A poll answer: QUEUED, PROCESSING, COMPLETED or FAILED (the latter with the service's reason)."""

    state: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class JobResult:
    state: str
    output_url: str | None  # http(s) URL or data: URI; None when the body names no image
    cost_usd: float | None
    inference_time: float | None
    error: str | None = None
    remaining_credits: float | None = None


@dataclass(frozen=True)
class Credits:
    credits: float
    free_credits: float

    @property
    def total(self) -> float:
        return self.credits + self.free_credits


@dataclass(frozen=True)
class RateLimited:
    """429: ``reset_in`` seconds until the window resets, when the service said so."""

    reset_in: float | None
    message: str


@dataclass(frozen=True)
class Retryable:
    """5xx, timeout or dropped connection: try again later. ``sent`` says the request may have arrived."""

    message: str
    status: int | None = None
    sent: bool = True


@dataclass(frozen=True)
class ItemFatal:
    """The service refused this item for good (400, 406 rejected value, 422 FAILED)."""

    message: str
    status: int | None = None


@dataclass(frozen=True)
class RunFatal:
    """Nothing else will succeed either: bad key, forbidden or retired model, money ran out."""

    kind: str  # auth | forbidden | retired | credits | spend_limit | protocol
    message: str
    status: int | None = None


@dataclass(frozen=True)
class Expired:
    """404 on a request record: retention is over (or the id was never known)."""

    message: str


Outcome = Accepted | JobStatus | JobResult | Credits | RateLimited | Retryable | ItemFatal | RunFatal | Expired
# Every answer that is not the thing asked for: how to go on is the caller's (stage's) decision.
Trouble = RateLimited | Retryable | ItemFatal | RunFatal | Expired


# ---- the account's request history ----------------------------------------------------------


@dataclass(frozen=True)
class HistoryRow:
    """One request as the account's history shows it; also the outcome of a lookup by id.

    ``status`` is None while the record has not landed (every field but the id still null), then
    PENDING, then COMPLETED or FAILED. ``request_body`` is the JSON object as it was sent.
    """

    request_id: str
    status: str | None = None
    model_name: str | None = None
    cost_usd: float | None = None  # credits_deduction: the request's full cost, on every row of it
    request_body: dict[str, Any] | None = None
    generation_url: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    created: datetime | None = None  # when the service accepted it (UTC)
    updated: datetime | None = None

    @property
    def landed(self) -> bool:
        return self.status is not None

    @property
    def billed(self) -> bool:
        """Charged: only a finished request carries a cost, and only a COMPLETED one a non-zero one."""
        return self.cost_usd is not None and self.cost_usd > 0


@dataclass(frozen=True)
class HistoryPage:
    """One page of the list as served (duplicate rows of a multi-output request included)."""

    rows: tuple[HistoryRow, ...]
    page: int
    per_page: int
    total: int | None = None  # rows over all pages, when the envelope says


@dataclass(frozen=True)
class HistoryRows:
    """Every row of a time range, one per request (de-duplicated on request_id), oldest first."""

    rows: tuple[HistoryRow, ...]
    pages: int = 0  # list calls it took

    def by_id(self) -> dict[str, HistoryRow]:
        return {r.request_id: r for r in self.rows}


@dataclass(frozen=True)
class HistoryNotFound:
    """404 on a lookup by id: not a request of this key (the history keeps every age)."""

    request_id: str
    message: str


@dataclass(frozen=True)
class HistoryUnavailable:
    """The history host has no such endpoint (404/405 on the list, 405 on a lookup) or redirects."""

    message: str
    status: int | None = None


HistoryOutcome = (
    HistoryRow
    | HistoryPage
    | HistoryRows
    | HistoryNotFound
    | HistoryUnavailable
    | RateLimited
    | Retryable
    | RunFatal
    | ItemFatal
)
