"""What an answer of the service means, as types: the stages decide from a type, never a status code.

Also the ``Secret`` that carries the API key, so no outcome, repr or log line can show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Accepted",
    "Credits",
    "Expired",
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


class Secret:
    """Holds the API key so that no repr, log line or exception text can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

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
