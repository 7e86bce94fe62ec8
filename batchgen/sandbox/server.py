"""The aiohttp application speaking Segmind's v2 wire protocol, and its async context manager.

Gates run in the order a real gateway applies them (content type, key, rate limit, injected
trouble) so the worker meets each error in the place it would meet it in production.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from batchgen.api import protocol as P
from batchgen.models import get_model, validate_params
from batchgen.sandbox.history import HistoryStore, add_history_routes
from batchgen.sandbox.images import render_png
from batchgen.sandbox.state import Job, SandboxConfig, SandboxState, utc_iso

__all__ = ["Sandbox", "build_app"]

STATE_KEY: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)

_HTML_405 = (
    "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n"
    "<center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_HTML_5XX = {
    502: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    504: "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
}


_COUNTED = {"submit": "submit_requests", "status": "status_polls", "result": "result_fetches",
            "credits": "credit_checks", "history": "history_requests"}


class _Dropped(Exception):
    """The connection was torn down on purpose; there is no answer to send."""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _drop_connection(request: web.Request) -> None:
    """Abort with a TCP reset so the client sees a broken connection, not an HTTP answer."""
    transport = request.transport
    if transport is None:
        raise _Dropped()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
    raise _Dropped()


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class _Handlers:
    def __init__(self, state: SandboxState) -> None:
        self.s = state
        self.history = HistoryStore(state)

    # -- gates --------------------------------------------------------------------------------
    def _reject_submit(self, code: int | str) -> None:
        self.s.submits_rejected[str(code)] += 1

    def _rate_limited(self, reset_at: float) -> web.Response:
        cfg = self.s.config
        headers = {P.RATE_RESET_HEADER: utc_iso(self.s.wall_at(reset_at))}
        if cfg.retry_after:
            headers["Retry-After"] = str(max(1, int(-(-(reset_at - self.s.now()) // 1))))
        return _json(429, {"error": "Rate limit exceeded. Please try again later."}, headers)

    async def _gate(
        self, request: web.Request, kind: str
    ) -> tuple[str | None, web.Response | None, str | None]:
        """Common checks of keyed API calls → (key, early answer, injected fault that is still pending)."""
        s = self.s
        is_submit = kind == "submit"
        s.settle()
        if is_submit:
            ctype = request.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip().lower() != "application/json":
                self._reject_submit(406)
                return None, web.Response(status=406, text="Invalid content type"), None
        key = request.headers.get(P.API_KEY_HEADER, "").strip()
        if not key:
            if is_submit:
                self._reject_submit(401)
            return None, _json(401, {"error": "Missing Authorization or x-api-key in header"}), None
        if (s.config.api_key is not None and key != s.config.api_key) or key in s.keys.revoked:
            if is_submit:
                self._reject_submit(401)
            return None, _json(401, {"error": "Unauthorized. API key is invalid or has been revoked."}), None
        s.counters[_COUNTED[kind]] += 1
        s.keys.counters(key)[kind] += 1
        if s.limiter is not None and (is_submit or s.config.rpm_scope == "all"):
            reset_at = s.limiter.acquire(key, s.now())
            if reset_at is not None:
                s.counters["rate_limited"] += 1
                s.keys.counters(key)["rate_limited"] += 1
                if is_submit:
                    self._reject_submit(429)
                return key, self._rate_limited(reset_at), None
        fault = s.faults.draw_api(is_submit)
        if fault is None:
            return key, None, None
        if fault == "lost":
            return key, None, "lost"  # decided once the submit is known to be accepted
        s.faults_injected[fault] += 1
        if is_submit and fault != "slow":
            self._reject_submit(fault)
        if fault == "429":
            window_end = s.now() + s.config.scaled(1.0)
            return key, self._rate_limited(window_end), None
        if fault == "500":
            return key, _json(500, {"error": "Internal Server Error"}), None
        if fault in ("502", "504"):
            return (
                key,
                web.Response(status=int(fault), text=_HTML_5XX[int(fault)], content_type="text/html"),
                None,
            )
        if fault == "reset":
            _drop_connection(request)
        if fault == "slow":
            await asyncio.sleep(s.config.scaled(s.config.slow_seconds))
            s.settle()
        return key, None, None

    # -- endpoints ----------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.StreamResponse:
        s = self.s
        key, early, pending = await self._gate(request, "submit")
        if early is not None:
            return early
        slug = request.match_info["slug"]
        spec = get_model(slug)
        if spec is None:
            self._reject_submit(404)
            return _json(404, {"error": f"Model {slug} not found"})
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError):
            self._reject_submit(400)
            return _json(400, {"error": "Request body is not valid JSON"})
        if not isinstance(body, dict):
            self._reject_submit(400)
            return _json(400, {"error": "Request body must be a JSON object of model parameters"})
        problems = validate_params(spec, body)
        if problems:
            self._reject_submit(400)
            return _json(400, {"error": "; ".join(str(p) for p in problems)})
        price = s.config.price_for(slug)
        if s.balance < price:
            self._reject_submit(406)
            return _json(406, {"error": f"Insufficient credits: balance ${s.balance:.2f}, need ${price:.2f}"})
        width, height = spec.image_size(body)
        assert key is not None
        job = s.create_job(slug, key, body, width, height)
        self.history.record(job, await request.text())  # before a ``lost`` answer is dropped
        if pending == "lost":
            s.faults_injected["lost"] += 1
            s.counters["lost_submit_answers"] += 1
            _drop_connection(request)
        base = _base_url(request)
        return _json(
            200,
            {
                "request_id": job.id,
                "status": "QUEUED",
                "status_url": base + P.path(P.STATUS, request_id=job.id),
                "response_url": base + P.path(P.RESULT, request_id=job.id),
                "poll_url": base + P.path(P.RESULT_V1, request_id=job.id),
            },
        )

    def _lookup(self, request: web.Request, now: float, key: str) -> Job | web.Response:
        request_id = request.match_info["request_id"]
        job = self.s.jobs.get(request_id)
        if job is not None and job.key != key:  # another key's request is as unknown as a made-up id
            self.s.keys.counters(key)["foreign"] += 1
            job = None
        if job is None or self.s.record_expired(job, now):
            self.s.counters["not_found"] += 1
            return _json(404, {"error": f"Request {request_id} not found"})
        return job

    async def status(self, request: web.Request) -> web.StreamResponse:
        key, early, _ = await self._gate(request, "status")
        if early is not None or key is None:
            return early or _json(401, {})
        now = self.s.now()
        job = self._lookup(request, now, key)
        if isinstance(job, web.Response):
            return job
        phase = job.phase(now)
        body: dict[str, Any] = {"status": phase, "metrics": job.metrics(now)}
        if phase == "FAILED":
            body["error"] = job.error
            return _json(422, body)
        return _json(200, body)

    async def result(self, request: web.Request) -> web.StreamResponse:
        key, early, _ = await self._gate(request, "result")
        if early is not None or key is None:
            return early or _json(401, {})
        s = self.s
        now = s.now()
        job = self._lookup(request, now, key)
        if isinstance(job, web.Response):
            return job
        phase = job.phase(now)
        metrics: dict[str, Any] = job.metrics(now)
        body: dict[str, Any] = {"request_id": job.id, "status": phase, "output": None, "metrics": metrics}
        if phase == "FAILED":
            body["error"] = job.error
            return _json(422, body)
        if phase == "COMPLETED":
            s.note_first_fetch(job, now)
            url = f"{_base_url(request)}/files/{job.file_name}"
            shape = s.config.output_shape
            body["output"] = [url] if shape == "list" else url if shape == "string" else {"url": url}
            body["images"] = [url]
            metrics["cost"] = job.price_micro / 1_000_000
            metrics["remaining_credits"] = s.balance
        return _json(200, body)

    async def credits(self, request: web.Request) -> web.StreamResponse:
        _, early, _ = await self._gate(request, "credits")
        if early is not None:
            return early
        return _json(200, {"credits": self.s.balance, "free-credits": 0})

    async def download(self, request: web.Request) -> web.StreamResponse:
        s = self.s
        s.counters["downloads"] += 1
        name = request.match_info["name"]
        now = s.now()
        job = s.jobs.get(name.removesuffix(".png")) if name.endswith(".png") else None
        if job is not None and job.phase(now) == "COMPLETED" and not s.file_expired(job, now):
            data = render_png(str(job.params.get("prompt", "")), job.params.get("seed"), job.width, job.height)
        elif job is None and (kept := s.earlier_file(name)) is not None:
            data = render_png(kept.prompt, kept.seed, kept.width, kept.height)
        else:
            return _json(404, {"error": f"File {name} not found"})
        if not s.faults.draw_truncate():
            return web.Response(body=data, content_type="image/png")
        s.faults_injected["truncate"] += 1
        s.counters["truncated_downloads"] += 1
        resp = web.StreamResponse(status=200, headers={"Content-Type": "image/png"})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: max(1, len(data) // 3)])
        if request.transport is not None:
            request.transport.close()  # flushes what was written, then FIN: a short body
        raise _Dropped()

    async def sandbox_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self.s.stats())

    async def sandbox_credits(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            usd = body["credits"]
            self.s.set_credits(usd)
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": f'expected {{"credits": <USD>}}: {exc}'})
        return _json(200, {"credits": self.s.balance})


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.counters["requests_total"] += 1
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return web.Response(
            status=405,
            text=_HTML_405,
            content_type="text/html",
            headers={"Allow": exc.headers.get("Allow", "")},
        )
    except web.HTTPNotFound:
        return _json(404, {"error": "Not found"})
    except _Dropped:
        # The transport is gone; aiohttp only needs to be told not to answer.
        raise asyncio.CancelledError() from None


def build_app(state: SandboxState) -> web.Application:
    """The aiohttp application bound to ``state``; usable with any aiohttp runner or test client."""
    h = _Handlers(state)
    app = web.Application(middlewares=[_middleware], client_max_size=1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_post(P.SUBMIT, h.submit)
    app.router.add_get(P.STATUS, h.status)
    app.router.add_get(P.RESULT, h.result)
    app.router.add_get(P.RESULT_V1, h.result)
    app.router.add_get(P.CREDITS, h.credits)
    app.router.add_get("/files/{name}", h.download)
    app.router.add_get("/_sandbox/stats", h.sandbox_stats)
    app.router.add_post("/_sandbox/credits", h.sandbox_credits)
    add_history_routes(app, h.history, h._gate)
    return app


class Sandbox:
    """A running emulator on a real socket; ``async with Sandbox(...) as sb`` then use ``sb.url``.
    Accepts a ready ``SandboxConfig`` or its fields as keywords. ``clock`` lets a test move time by
    hand (it must be monotonic); injected slowness still sleeps in real time."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either a SandboxConfig or keyword options, not both")
        self.config = config if config is not None else SandboxConfig(**options)
        self.host = host
        self.port = port
        self.state = SandboxState(self.config, clock)
        self.app = build_app(self.state)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL (no trailing slash); the SDK wants ``f"{sb.url}/v1"``."""
        if self._runner is None:
            raise RuntimeError("sandbox is not running")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        if self.port == 0 and server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def stats(self) -> dict[str, Any]:
        """Counters of section 2.4 plus extras; settles due jobs first so money is up to date."""
        return self.state.stats()

    def requests(self) -> list[dict[str, Any]]:
        """Per-request view (phase, ever fetched, record expired) for checks against a ledger."""
        return self.state.requests()

    def set_credits(self, usd: float) -> None:
        """Top up or drain the balance while running, e.g. to test a resume after 406."""
        self.state.set_credits(usd)

    def set_faults(self, spec: str | Mapping[str, float] | None, seed: int | None = None) -> None:
        """New faults (a ``--faults`` spec) and seed from the next request on: a test faults one phase."""
        self.state.set_faults(spec, seed)

    @property
    def credits(self) -> float:
        return self.state.balance
