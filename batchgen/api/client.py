"""The only module that speaks Segmind's protocol.

Every answer is mapped to a typed outcome (``outcomes``) so the stages decide what to do from a
type, never from a status code; reading bodies and headers is in ``wire``, moving bytes is the
transport's job (``transport``; HTTP/1.1 on asyncio by default, ``MockTransport`` in tests). The API key is sent
only to the configured base URL: status and result are fetched at paths built from our own base,
API calls never follow a redirect, and output files (which need no key) are fetched without it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from batchgen import __version__
from batchgen.api import protocol as P
from batchgen.api.deferred_transport import DeferredTransport
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
from batchgen.api.transport import (
    BodyTooLarge,
    ConnectFailed,
    Request,
    RequestTimeout,
    StreamResponse,
    TimedOut,
    Transport,
    TransportError,
)
from batchgen.api.wire import error_text, extract_image, number, reset_delay, short
from batchgen.core import fastjson

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Accepted",
    "Client",
    "MAX_JSON_BYTES",
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
MAX_DOWNLOAD_REDIRECTS = 5
USER_AGENT = f"batchgen/{__version__}"


# ---- the client -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    api_total: float = 60.0
    read: float = 30.0
    download_total: float = 300.0


class Client:
    """The service's four calls and the image download, over one transport for a whole run."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        connections: int = 64,
        timeouts: Timeouts | None = None,
        transport: Transport | None = None,
    ) -> None:
        """``connections`` sizes the default transport's pool; a ``transport`` given here is used as is."""
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.timeouts = timeouts or Timeouts()
        # The default: imported and opened only when something is sent (deferred_transport).
        self._transport: Transport = transport if transport is not None else DeferredTransport(connections=connections)
        self._api_timeout_for: Timeouts | None = None
        self._api_timeout_cached = RequestTimeout(0, 0, 0)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, api_key=***)"

    async def __aenter__(self) -> Client:
        await self._transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._transport.aclose()

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session when the transport is aiohttp's (``BATCHGEN_HTTP=aiohttp``), where its
        TLS settings can be checked; the default transport's are its ``ssl_context``."""
        from batchgen.api.aiohttp_transport import AiohttpTransport

        transport = self._transport.real() if isinstance(self._transport, DeferredTransport) else self._transport
        if not isinstance(transport, AiohttpTransport):
            raise RuntimeError(f"this client's transport ({self._transport!r}) has no aiohttp session")
        return transport.session

    def with_key(self, api_key: Secret) -> Client:
        """Another key's client over this client's base, timeouts and transport (one connection pool
        for a run's keys). The transport stays this client's to open and close."""
        return Client(self.base_url, api_key, timeouts=self.timeouts, transport=self._transport)

    def at(self, base_url: str) -> Client:
        """This client's key, timeouts and transport for keyed calls to another configured host (the
        request history's). The transport stays this client's to open and close."""
        return Client(base_url, self._key, timeouts=self.timeouts, transport=self._transport)

    async def get_json(
        self, path: str, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any, str, Mapping[str, str]] | Retryable:
        """One keyed GET of a path on this client's own base: (status, JSON or None, text, headers)."""
        return await self._call("GET", path + ("?" + urlencode(query) if query else ""))

    def _api_timeout(self) -> RequestTimeout:
        t = self.timeouts
        if self._api_timeout_for is not t:  # ``timeouts`` may be replaced; build once per value
            self._api_timeout_cached = RequestTimeout(total=t.api_total, connect=t.connect, read=t.read)
            self._api_timeout_for = t
        return self._api_timeout_cached

    async def _call(
        self, method: str, path: str, payload: Any = None
    ) -> tuple[int, Any, str, Mapping[str, str]] | Retryable:
        """Send one keyed API request; returns (status, parsed JSON or None, text, headers)."""
        headers = {"User-Agent": USER_AGENT, P.API_KEY_HEADER: self._key.reveal(), "Accept": "application/json"}
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = fastjson.dumps(payload)
        request = Request(
            method,
            self.base_url + path,
            headers,
            body,
            timeout=self._api_timeout(),
            max_body=MAX_JSON_BYTES,
            max_redirects=0,  # a redirect would carry the key elsewhere: it is an answer, classified below
        )
        try:
            resp = await self._transport.send(request)
        except BodyTooLarge as e:
            if e.declared is not None:
                return Retryable(f"HTTP {e.status}: answer too large ({e.declared} bytes)", e.status)
            return Retryable(f"HTTP {e.status}: answer larger than {MAX_JSON_BYTES} bytes", e.status)
        except TimedOut:
            return Retryable(f"{method} {path}: no answer within the timeout")
        except ConnectFailed as e:
            return Retryable(f"{method} {path}: cannot connect ({e.reason})", sent=False)
        except TransportError as e:
            return Retryable(f"{method} {path}: connection failed ({e.reason})", sent=e.sent)
        text = resp.content.decode("utf-8", errors="replace")
        # A gateway that echoes the key must not carry it into messages, logs or the ledger.
        text = self._key.redact(text)
        try:
            parsed = fastjson.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return resp.status, parsed, text, resp.headers

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
    async def download(self, url: str) -> AsyncIterator[StreamResponse]:
        """GET an output file without the API key; redirects are followed a bounded number of times."""
        t = self.timeouts
        request = Request(
            "GET",
            url,
            {"User-Agent": USER_AGENT},
            timeout=RequestTimeout(total=t.download_total, connect=t.connect, read=t.read),
            max_redirects=MAX_DOWNLOAD_REDIRECTS,
        )
        async with self._transport.stream(request) as resp:
            yield resp
