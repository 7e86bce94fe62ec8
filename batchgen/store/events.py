"""The ledger's vocabulary: the kinds of event a line can be, where an item stands, and one builder
per event, so a writer cannot misspell a kind or forget the field a resume depends on.

The enums are ``StrEnum``: a member *is* its string, so it compares equal to what a replay reads
from disk and serializes as that same string through orjson and the standard library alike. Never
use a member as a dict key in JSON output: orjson refuses str subclasses as keys (use ``.value``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Event",
    "EventKind",
    "Phase",
    "Stage",
    "completed",
    "downloaded",
    "expired",
    "failed",
    "intent",
    "recovered",
    "run_end",
    "run_start",
    "submit_retry",
    "submitted",
    "superseded",
]


class EventKind(StrEnum):
    """Every event a ledger line can record (the ``event`` field)."""

    RUN_START = "run_start"
    RUN_END = "run_end"
    INTENT = "intent"  # about to POST: the submit may reach the service from here on
    SUBMITTED = "submitted"  # the service accepted it and named a request_id (billable)
    SUBMIT_RETRY = "submit_retry"  # refused (429, 5xx) or its answer was lost; waits for another try
    COMPLETED = "completed"
    DOWNLOADED = "downloaded"
    EXPIRED = "expired"  # the request record went away unread; the item is submitted again
    FAILED = "failed"
    # A request of this item found in the account's history that the ledger had no answer for (a
    # lost submit answer, a crash after the POST): adopted instead of paid for again.
    RECOVERED = "recovered"
    SUPERSEDED = "superseded"  # an image made from earlier parameters was moved aside, kept under another name

    @classmethod
    def of(cls, value: Any) -> EventKind | None:
        """The kind a line names; None for a kind this version does not know (a newer ledger)."""
        return _KINDS.get(value) if isinstance(value, str) else None


_KINDS: dict[str, EventKind] = {k.value: k for k in EventKind}


class Phase(StrEnum):
    """Where an item stands, in the order it moves through them (the fold's ``ItemState.state``)."""

    PENDING = "pending"
    INTENT = "intent"  # the POST may or may not have reached the service
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    DOWNLOADED = "downloaded"
    FAILED = "failed"


class Stage(StrEnum):
    """Which step a ``failed`` event gave up in: reports group failures by it."""

    SUBMIT = "submit"
    POLL = "poll"
    GENERATE = "generate"
    DOWNLOAD = "download"


@dataclass(frozen=True)
class Event:
    """One line to append: ``Ledger.write`` adds the timestamp and leaves out fields that are None."""

    kind: EventKind
    item: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)


def _flag(value: bool) -> bool | None:
    # Flags are written only when set: a line without the key reads as False, and stays short.
    return True if value else None


def run_start(*, pid: int, items: int, pending: int) -> Event:
    return Event(EventKind.RUN_START, None, {"pid": pid, "items": items, "pending": pending})


def run_end(*, exit_code: int, reason: str | None, counts: Mapping[str, int], spent_usd: float) -> Event:
    """``counts`` keys must be plain strings (they are written as JSON object keys)."""
    return Event(
        EventKind.RUN_END,
        None,
        {"exit_code": int(exit_code), "reason": reason, "counts": dict(counts), "spent_usd": spent_usd},
    )


def intent(
    item: str, *, params_sha: str, attempt: int, params: Mapping[str, Any], key_fp: str | None = None
) -> Event:
    """Written before the POST: a crash after it leaves an item whose submit may have been billed.
    ``key_fp``: the fingerprint of the key it is sent with (never the key), so that a resumed run
    asks about it with that key."""
    return Event(EventKind.INTENT, item,
                 {"params_sha": params_sha, "attempt": attempt, "params": dict(params), "key_fp": key_fp})


def submitted(item: str, *, request_id: str, key_fp: str | None = None) -> Event:
    """``key_fp``: the fingerprint of the key that made the request; only that key may read it."""
    return Event(EventKind.SUBMITTED, item, {"request_id": request_id, "key_fp": key_fp})


def submit_retry(
    item: str,
    *,
    error: str,
    status: int | None = None,
    wait_s: float | None = None,
    uncertain: bool = False,
) -> Event:
    """``uncertain``: the POST may have reached the service, so it may have been billed."""
    return Event(
        EventKind.SUBMIT_RETRY,
        item,
        {"status": status, "error": error, "wait_s": wait_s, "uncertain": _flag(uncertain)},
    )


def completed(
    item: str,
    *,
    request_id: str,
    output_url: str | None,
    cost_usd: float | None = None,
    inference_time: float | None = None,
    latency_s: float | None = None,
    ready_s: float | None = None,
) -> Event:
    """``cost_usd`` None means the service reported none: spend estimates then use the list price."""
    return Event(
        EventKind.COMPLETED,
        item,
        {
            "request_id": request_id,
            "output_url": output_url,
            "cost_usd": cost_usd,
            "inference_time": inference_time,
            "latency_s": latency_s,
            "ready_s": ready_s,
        },
    )


def downloaded(
    item: str,
    *,
    request_id: str | None,
    file: str,
    sha256: str,
    bytes: int,  # the ledger's field name
    width: int | None = None,
    height: int | None = None,
) -> Event:
    """``file`` is relative to the output folder, so the folder can be moved."""
    return Event(
        EventKind.DOWNLOADED,
        item,
        {"request_id": request_id, "file": file, "sha256": sha256, "bytes": bytes, "width": width, "height": height},
    )


def superseded(item: str, *, file: str, was: str, params_sha: str, sha256: str | None, bytes: int | None) -> Event:
    """Written after the rename: ``was`` (the item's image until now) is kept as ``file``, made from
    the parameters hashed ``params_sha``; the item's new image takes its place."""
    return Event(
        EventKind.SUPERSEDED,
        item,
        {"file": file, "was": was, "params_sha": params_sha, "sha256": sha256, "bytes": bytes},
    )


def expired(item: str, *, request_id: str | None, error: str, note: str | None = None) -> Event:
    return Event(EventKind.EXPIRED, item, {"request_id": request_id, "error": error, "note": note})


def recovered(
    item: str,
    *,
    request_id: str,
    how: str,
    output_url: str | None = None,
    cost_usd: float | None = None,
    submitted_at: str | None = None,
    key_fp: str | None = None,
) -> Event:
    """``how`` says how the request was found (``history-body-match``: its body equals the item's
    intent). With an ``output_url`` the next run downloads it; without, it polls the request.
    ``submitted_at`` (ISO 8601 UTC, when the service accepted it) starts the item's retention clock.
    ``key_fp``: the fingerprint of the key whose history had it (the key that made it)."""
    return Event(
        EventKind.RECOVERED,
        item,
        {
            "request_id": request_id,
            "how": how,
            "output_url": output_url,
            "cost_usd": cost_usd,
            "submitted_at": submitted_at,
            "key_fp": key_fp,
        },
    )


def failed(
    item: str,
    *,
    stage: Stage,
    error: str,
    retryable: bool,
    request_id: str | None = None,
    status: int | None = None,
    output_url: str | None = None,
    uncertain: bool = False,
) -> Event:
    """``retryable``: the next run tries the item again; otherwise it has failed for good."""
    return Event(
        EventKind.FAILED,
        item,
        {
            "stage": Stage(stage),
            "request_id": request_id,
            "status": status,
            "output_url": output_url,
            "error": error,
            "retryable": retryable,
            "uncertain": _flag(uncertain),
        },
    )
