"""The only module that speaks HTTP to Segmind.

Every answer is mapped to a typed outcome (``outcomes``) so the stages decide what to do from a
type, never from a status code; reading bodies and headers is in ``wire``. The API key is sent only to the configured base URL: status and result are fetched
at paths built from our own base, and output files (which need no key) are fetched without it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from batchgen import __version__
from batchgen.api import protocol as P
from batchgen.api.outcomes import (
    Accepted,
    Credits,
    Expired,
    ItemFatal,
    JobResult,
    JobStatus,
    Outcome,
    RateLimited,
    Retryable,
    RunFatal,
    Secret,
)
from batchgen.api.wire import error_text, extract_image, number, reset_delay, short
from batchgen.core import fastjson

__all__ = [
    "Accepted",
    "Client",
    "Credits",
    "Timeouts",
    "extract_image",
    "reset_delay",
    "Expired",
    "ItemFatal",
    "JobStatus",
    "JobResult",
    "Outcome",
    "RateLimited",
    "Retryable",
    "RunFatal",
    "Secret",
]

MAX_JSON_BYTES = 4 * 1024 * 1024  # a status or result body is a few hundred bytes; refuse floods


# ---- the client -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    api_total: float = 60.0
    read: float = 30.0
    download_total: float = 300.0


class Client:
    """One aiohttp session for a whole run, with connection limits and a timeout on every request."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        connections: int = 64,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.timeouts = timeouts or Timeouts()
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, api_key=***)"

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": f"batchgen/{__version__}"},
            # TLS verification stays on (aiohttp's default); no cookies are needed.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Client is not open")
        return self._session

    def _api_timeout(self) -> aiohttp.ClientTimeout:
        t = self.timeouts
        return aiohttp.ClientTimeout(total=t.api_total, connect=t.connect, sock_read=t.read)

    async def _call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any, str, Any] | Retryable:
        """Send one keyed API request; returns (status, parsed JSON or None, text, headers)."""
        headers = {P.API_KEY_HEADER: self._key.reveal(), "Accept": "application/json"}
        data = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            data = fastjson.dumps(payload)
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                data=data,
                headers=headers,
                timeout=self._api_timeout(),
                allow_redirects=False,
            ) as resp:
                length = resp.content_length
                if length is not None and length > MAX_JSON_BYTES:
                    return Retryable(f"HTTP {resp.status}: answer too large ({length} bytes)", resp.status)
                # read(n) returns what has arrived so far, not n bytes: gather until EOF or the cap.
                buf = bytearray()
                while len(buf) <= MAX_JSON_BYTES:
                    part = await resp.content.read(MAX_JSON_BYTES + 1 - len(buf))
                    if not part:
                        break
                    buf += part
                if len(buf) > MAX_JSON_BYTES:
                    return Retryable(f"HTTP {resp.status}: answer larger than {MAX_JSON_BYTES} bytes", resp.status)
                text = buf.decode("utf-8", errors="replace")
                key = self._key.reveal()
                if key and key in text:
                    # A gateway that echoes the key must not carry it into messages, logs or the ledger.
                    text = text.replace(key, "***")
                try:
                    body = fastjson.loads(text) if text.strip() else None
                except ValueError:
                    body = None
                return resp.status, body, text, resp.headers
        except TimeoutError:
            return Retryable(f"{method} {path}: no answer within the timeout")
        except aiohttp.ClientConnectorError as e:
            return Retryable(f"{method} {path}: cannot connect ({e.os_error.strerror or e})", sent=False)
        except aiohttp.ClientError as e:
            return Retryable(f"{method} {path}: connection failed ({type(e).__name__})")

    def _classify_error(self, status: int, body: Any, text: str, headers: Any, *, on_poll: bool) -> Outcome:
        msg = error_text(body, text)
        said = f"HTTP {status}: {msg}"
        if status == 429:
            return RateLimited(reset_delay(headers), said)
        if status == 401:
            return RunFatal("auth", f"the API key was refused ({said}); check SEGMIND_API_KEY", status)
        if status == 403:
            return RunFatal("forbidden", f"this account may not use the model ({said})", status)
        if status == 410:
            return RunFatal("retired", f"the model is retired ({said})", status)
        if status == 404:
            if on_poll:
                return Expired(said)
            return RunFatal("not_found", f"no such model at this endpoint ({said})", status)
        if status == 406:
            low = msg.lower()
            if "credit" in low or "balance" in low:
                return RunFatal("credits", f"insufficient credits ({said})", status)
            if "spend" in low:  # not any "limit": a rejected value often names its own limit
                return RunFatal("spend_limit", f"spend limit reached ({said})", status)
            if "content type" in low or "content-type" in low:
                return RunFatal("protocol", f"the service refused the request format ({said})", status)
            return ItemFatal(said, status)
        if status == 400 or status == 413 or status == 422:
            return ItemFatal(said, status)
        if status == 405:
            return RunFatal("protocol", f"the endpoint refused the method ({said}); is --base-url right?", status)
        if 300 <= status < 400:
            return RunFatal("protocol", f"unexpected redirect ({said}); is --base-url right?", status)
        if status >= 500 or status == 408:
            return Retryable(said, status)
        return ItemFatal(said, status)

    async def submit(self, slug: str, params: dict[str, Any]) -> Outcome:
        got = await self._call("POST", P.path(P.SUBMIT, slug=slug), params)
        if isinstance(got, Retryable):
            return got
        status, body, text, headers = got
        if 200 <= status < 300:
            if not isinstance(body, dict):
                # Accepted or not, we cannot know: treat as a failure that may have cost money.
                return Retryable(f"HTTP {status}: submit answer is not JSON ({short(text, 80)})", status)
            rid = body.get("request_id")
            if not isinstance(rid, str) or not rid or not body.get("status_url") or not body.get("response_url"):
                return Retryable(
                    f"HTTP {status}: submit answer lacks request_id/status_url/response_url "
                    f"(keys: {', '.join(sorted(body)) or 'none'})",
                    status,
                )
            if not re.fullmatch(r"[A-Za-z0-9._:-]{1,200}", rid):
                return Retryable(f"HTTP {status}: unusable request_id {rid[:40]!r}", status)
            return Accepted(rid)
        return self._classify_error(status, body, text, headers, on_poll=False)

    async def status(self, request_id: str) -> Outcome:
        got = await self._call("GET", P.path(P.STATUS, request_id=request_id))
        if isinstance(got, Retryable):
            return got
        status, body, text, headers = got
        if isinstance(body, dict) and body.get("status") == "FAILED":
            return JobStatus("FAILED", body.get("metrics") or {}, error_text(body, text))
        if 200 <= status < 300:
            state = body.get("status") if isinstance(body, dict) else None
            if state not in ("QUEUED", "PROCESSING", "COMPLETED"):
                return Retryable(f"HTTP {status}: unrecognised status answer ({short(text, 80)})", status)
            metrics = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
            return JobStatus(state, metrics)
        return self._classify_error(status, body, text, headers, on_poll=True)

    async def result(self, request_id: str) -> Outcome:
        got = await self._call("GET", P.path(P.RESULT, request_id=request_id))
        if isinstance(got, Retryable):
            return got
        status, body, text, headers = got
        if isinstance(body, dict) and body.get("status") == "FAILED":
            m = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
            return JobResult("FAILED", None, None, number(m.get("inference_time")), error_text(body, text))
        if 200 <= status < 300:
            if not isinstance(body, dict):
                return Retryable(f"HTTP {status}: result is not JSON ({short(text, 80)})", status)
            state = body.get("status") or "COMPLETED"
            m = body.get("metrics") if isinstance(body.get("metrics"), dict) else {}
            return JobResult(
                state=str(state),
                output_url=extract_image(body) if state == "COMPLETED" else None,
                cost_usd=number(m.get("cost")),
                inference_time=number(m.get("inference_time")),
                remaining_credits=number(m.get("remaining_credits")),
            )
        return self._classify_error(status, body, text, headers, on_poll=True)

    async def credits(self) -> Outcome:
        got = await self._call("GET", P.CREDITS)
        if isinstance(got, Retryable):
            return got
        status, body, text, headers = got
        if 200 <= status < 300 and isinstance(body, dict):
            c = number(body.get("credits"))
            if c is None:
                return Retryable(f"HTTP {status}: credits answer has no balance", status)
            return Credits(c, number(body.get("free-credits")) or 0.0)
        if 200 <= status < 300:
            return Retryable(f"HTTP {status}: credits answer is not JSON", status)
        return self._classify_error(status, body, text, headers, on_poll=False)

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET an output file without the API key; redirects are followed a bounded number of times."""
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(total=t.download_total, connect=t.connect, sock_read=t.read)
        async with self.session.get(url, timeout=timeout, allow_redirects=True, max_redirects=5) as resp:
            yield resp
