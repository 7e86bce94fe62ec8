"""Reading the service's answers: error text, rate-limit resets, the image's location.

Pure functions over bodies and headers, so every odd shape the service (or a gateway in front of
it) produces can be tested without a connection.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from batchgen.api.protocol import RATE_RESET_HEADER

__all__ = ["error_text", "extract_image", "number", "reset_delay", "short"]


def short(text: str, limit: int = 200) -> str:
    """One line of what the server said, HTML pages reduced to their title or text."""
    t = text.strip()
    if t.startswith("<"):
        m = re.search(r"<title[^>]*>(.*?)</title>", t, re.I | re.S)
        t = m.group(1) if m else re.sub(r"<[^>]+>", " ", t)
    t = " ".join(t.split())
    return t[:limit] + ("…" if len(t) > limit else "")


def error_text(body: Any, raw: str) -> str:
    if isinstance(body, dict):
        for key in ("error_description", "error", "message", "detail"):
            v = body.get(key)
            if isinstance(v, str) and v:
                return short(v)
    return short(raw) or "(empty body)"


MAX_RESET_WAIT_S = 120.0  # rate windows are per minute; a longer wait is a clock problem, not a limit
CLOCK_SKEW_S = 5.0  # beyond the 1-s resolution of the Date header


def reset_delay(headers: Any, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``x-rate-limit-reset-at-utc`` or ``Retry-After`` (seconds or HTTP date).

    A reset instant is a reading of the service's clock. When ours disagrees with the answer's own
    ``Date`` by more than a few seconds (an NTP step, a resumed VM), the wait is measured on the
    service's clock instead; and it is capped, so no clock can make a run sleep for hours.
    """
    now = now or datetime.now(UTC)
    served = _http_date(headers.get("Date"))

    def until(dt: datetime) -> float:
        wait = (dt - now).total_seconds()
        if served is not None:
            by_service = (dt - served).total_seconds()
            if abs(by_service - wait) > CLOCK_SKEW_S:
                wait = by_service
        return min(MAX_RESET_WAIT_S, max(0.0, wait))

    reset_at = headers.get(RATE_RESET_HEADER)
    if reset_at:
        try:
            v = reset_at.strip()
            if re.fullmatch(r"\d+(\.\d+)?", v):
                ts = float(v)
                dt = datetime.fromtimestamp(ts / 1000 if ts > 1e11 else ts, UTC)
            else:
                dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=UTC)
            return until(dt)
        except (ValueError, OverflowError, OSError):
            pass
    ra = headers.get("Retry-After")
    if ra:
        ra = ra.strip()
        try:
            return min(MAX_RESET_WAIT_S, max(0.0, float(ra)))
        except ValueError:
            dt = _http_date(ra)
            if dt is not None:
                return until(dt)
    return None


def _http_date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def extract_image(body: Any) -> str | None:
    """Find the image in a result body, liberal in what it accepts (URL, list, object, data URI, base64)."""

    def pick(v: Any, depth: int = 0) -> str | None:
        if depth > 4:
            return None
        if isinstance(v, str):
            s = v.strip()
            if s.startswith(("http://", "https://", "data:")):
                return s
            if len(s) > 64 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", s[:4096]):
                return "data:application/octet-stream;base64," + s
            # Anything else (file://, ftp:, relative paths) is returned as is and refused later.
            return s or None
        if isinstance(v, list):
            for x in v:
                r = pick(x, depth + 1)
                if r:
                    return r
            return None
        if isinstance(v, dict):
            for key in ("url", "image", "images", "output"):
                if key in v:
                    r = pick(v[key], depth + 1)
                    if r:
                        return r
        return None

    if not isinstance(body, dict):
        return None
    for key in ("images", "output", "image", "url"):
        if key in body:
            r = pick(body[key])
            if r:
                return r
    return None


def number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None
