"""A hostile or broken service: every bad answer ends as a clear item failure (or retry) in bounded time.

A tiny aiohttp server speaks the v2 endpoints and misbehaves in one chosen way; the real pipeline
(``batchgen.app.runner.execute``) runs against it. Timeouts and backoffs are shortened so a test
takes seconds, but every limit that protects the worker (answer caps, the image cap, redirect
limit, scheme check) is the production one. Each case checks: the run ends within a generous bound,
each item's ledger reason names the problem, nothing is written outside the output folder, and no
partial file is left under images/.
"""

from __future__ import annotations

import asyncio
import functools
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from batchgen.api import client as client_mod
from batchgen.app import runner as runner_mod
from batchgen.app.runner import RunOptions, execute
from batchgen.engine.config import RetryPolicy, RunConfig
from batchgen.sandbox.images import render_png
from batchgen.store import ledger as L
from tests.support.cli import KEY, image_files, image_path, ledger_events, manifest_ids, write_manifest
from tests.support.images import png_size

PNG = render_png("hostile", 123, 64, 64)
HUGE_JSON = b'{"status": "COMPLETED", "pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'  # built once: only the worker's memory is measured
HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body><h1>oops</h1>" + "x" * 5000 + "</body></html>"


class Hostile:
    """The v2 endpoints, answering normally except for the one misbehaviour named by ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.url = ""
        self.n = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/{slug}", self.submit)
        app.router.add_get("/v2/requests/{rid}/status", self.status)
        app.router.add_get("/v2/requests/{rid}", self.result)
        app.router.add_get("/v1/get-user-credits", self.credits)
        app.router.add_get("/img/{name}", self.image)
        return app

    async def credits(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"credits": 1000.0, "free-credits": 0})

    async def submit(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "submit_html":
            return web.Response(status=500, text=HTML_500, content_type="text/html")
        if self.mode == "submit_no_id":
            return web.json_response({"status": "QUEUED", "message": "accepted, probably"})
        if self.mode == "submit_not_json":
            return web.Response(status=200, text="OK, queued!", content_type="text/plain")
        self.n += 1
        rid = f"r{self.n}"
        return web.json_response({"request_id": rid, "status": "QUEUED",
                                  "status_url": f"{self.url}/v2/requests/{rid}/status",
                                  "response_url": f"{self.url}/v2/requests/{rid}"})

    async def status(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "status_endless_json":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"status": "QUEUED", "pad": "')
            while True:  # never ends: the client must stop reading at its cap
                await resp.write(b"x" * 65536)
        if self.mode == "status_huge_declared":
            return web.Response(body=HUGE_JSON, content_type="application/json")
        if self.mode == "status_trickle":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for byte in b'{"status": "COMPLETED", "metrics": {}}':
                await resp.write(bytes([byte]))
                await asyncio.sleep(1.0)
            return resp
        if self.mode == "status_redirect_loop":
            raise web.HTTPFound(str(request.url))
        return web.json_response({"status": "COMPLETED", "metrics": {"total_time": 0.01}})

    async def result(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        rid = request.match_info["rid"]
        output = {
            "file_url": "file:///etc/passwd",
            "ftp_url": "ftp://files.example/x.png",
            "relative_url": "../../../outside.png",
            "endless_image": f"{self.url}/img/endless",
            "oversized_image": f"{self.url}/img/oversized",
            "not_an_image": f"{self.url}/img/html",
            "image_redirect_loop": f"{self.url}/img/loop",
            "image_trickle": f"{self.url}/img/trickle",
        }.get(self.mode, f"{self.url}/img/{rid}.png")
        return web.json_response({"status": "COMPLETED", "output": [output],
                                  "metrics": {"cost": 0.1, "inference_time": 0.01}})

    async def image(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "endless":
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            await resp.prepare(request)
            await resp.write(PNG[:-12])  # a real PNG start, then filler forever
            while True:
                await resp.write(b"\0" * 65536)
        if name == "oversized":
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            resp.content_length = 200 * 1024 * 1024
            await resp.prepare(request)
            await resp.write(PNG[:64])
            return resp
        if name == "html":
            return web.Response(text="<html><body>Access denied</body></html>" + " " * 100, content_type="text/html")
        if name == "loop":
            raise web.HTTPFound(f"{self.url}/img/loop")
        if name == "trickle":
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            resp.content_length = len(PNG)
            await resp.prepare(request)
            for b in PNG:
                await resp.write(bytes([b]))
                await asyncio.sleep(1.0)
            return resp
        return web.Response(body=PNG, content_type="image/png")


async def serve(h: Hostile) -> AsyncIterator[Hostile]:
    runner = web.AppRunner(h.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield h
    finally:
        await runner.cleanup()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short timeouts and backoffs; the protective limits (caps, redirects, schemes) stay as shipped."""
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    monkeypatch.setattr(runner_mod, "RunConfig", functools.partial(
        RunConfig, retry=RetryPolicy(backoff_base_s=0.01, submit_retries=2, download_retries=1, max_expiries=1)))
    monkeypatch.setattr(client_mod, "Timeouts", functools.partial(
        client_mod.Timeouts, connect=1.0, api_total=1.0, read=0.8, download_total=1.5))


# mode -> (exit code, fragment every failed item's reason must contain)
CASES: dict[str, tuple[int, str]] = {
    "submit_html": (1, "500 Internal Server Error"),
    "submit_no_id": (1, "lacks request_id"),
    "submit_not_json": (1, "not JSON"),
    "status_endless_json": (1, "expired unread"),
    "status_huge_declared": (1, "expired unread"),
    "status_trickle": (1, "expired unread"),
    "status_redirect_loop": (3, "unexpected redirect"),
    "file_url": (1, "scheme 'file'"),
    "ftp_url": (1, "scheme 'ftp'"),
    "relative_url": (1, "refusing output URL"),
    "endless_image": (1, "cap"),
    "oversized_image": (1, "over the"),
    "not_an_image": (1, "does not serve an image"),
    "image_redirect_loop": (1, "too many redirects"),
    "image_trickle": (1, "timed out"),
}


@pytest.mark.parametrize("mode", list(CASES))
async def test_hostile_answer_ends_clearly_in_bounded_time(tmp_path: Path, quick: None, mode: str) -> None:
    code, fragment = CASES[mode]
    n = 2
    manifest = write_manifest(tmp_path / "m.yaml", n)
    out = tmp_path / "out"
    said: list[str] = []
    async for h in serve(Hostile(mode)):
        tracemalloc.start()
        try:
            with anyio.fail_after(60):
                outcome = await execute(RunOptions(manifest=manifest, out=out, base_url=h.url, retention=1.0),
                                        said.append)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert outcome.exit_code == code, (outcome, said)
    assert peak < 64 * 1024 * 1024, f"peak memory {peak} bytes"
    events = ledger_events(out)
    if code == 3:
        assert fragment in (outcome.reason or "")
    else:
        state = L.replay(out / "ledger.jsonl")
        for item in manifest_ids(n):
            st = state.items[item]
            assert st.state == L.FAILED, (item, st)
            assert fragment in (st.error or ""), (item, st.error)
            assert "<html" not in (st.error or "").lower() and len(st.error or "") < 600, st.error
    assert not [ev for ev in events if ev["event"] == "downloaded"]
    # Nothing outside the output folder, nothing (not even a temporary file) under images/.
    assert names(tmp_path) == ["m.yaml", "out"]
    assert image_files(out) == []  # at any depth: the bucket folders hold no file either


async def test_a_well_behaved_hostile_server_works(tmp_path: Path, quick: None) -> None:
    """The test server itself is sound: in its normal mode the same run downloads every image."""
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    out = tmp_path / "out"
    async for h in serve(Hostile("normal")):
        with anyio.fail_after(30):
            outcome = await execute(RunOptions(manifest=manifest, out=out, base_url=h.url), lambda m: None)
    assert outcome.exit_code == 0, outcome
    for item in manifest_ids(2):
        assert png_size(out / image_path(item)) == (64, 64)


