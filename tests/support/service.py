"""A scripted HTTP service on a real socket, and a client pointed at it (fixtures ``service``, ``client``).

Answer-by-answer classification is also covered with aioresponses (test_client_answers.py) and
without any socket through MockTransport (test_transport.py); the tests here need what a mock
cannot give: bodies arriving in pieces, dropped connections, timeouts and redirects on a real
socket. Each test scripts what a path answers and reads back what the client sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchgen.api.aiohttp_transport import AiohttpTransport
from batchgen.api.client import Client, Secret, Timeouts
from batchgen.api.http11 import Http11Transport

KEY = "sk-unit-test-key-0123456789abcdef"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Service:
    """Answers scripted per ``(method, path)``; unscripted paths answer 599 so a test notices."""

    url: str = ""
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)

    def on(
        self,
        method: str,
        path: str,
        status: int = 200,
        *,
        json_body: Any = None,
        text: str | bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            if json_body is not None:
                body: bytes = json.dumps(json_body).encode()
                ctype = content_type or "application/json"
            else:
                body = text.encode() if isinstance(text, str) else (text or b"")
                ctype = content_type or "text/plain"
            return web.Response(status=status, body=body, content_type=ctype, headers=headers)

        self.routes[(method, path)] = answer

    def handle(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Seen(request.method, request.path, dict(request.headers), body))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.Response(status=599, text=f"unscripted {request.method} {request.path}")
        return await handler(request)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    svc = Service()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", svc.dispatch)
    server = TestServer(app)
    await server.start_server()
    svc.url = str(server.make_url("")).rstrip("/")
    try:
        yield svc
    finally:
        await server.close()


TRANSPORTS = {"http11": Http11Transport, "aiohttp": AiohttpTransport}


@pytest.fixture(params=sorted(TRANSPORTS))
def transport_kind(request: pytest.FixtureRequest) -> type[Http11Transport] | type[AiohttpTransport]:
    """Each transport in turn: every socket-level case runs against both."""
    return TRANSPORTS[request.param]


@pytest.fixture
async def client(service: Service, transport_kind) -> AsyncIterator[Client]:
    timeouts = Timeouts(connect=2.0, api_total=2.0, read=1.0)
    async with Client(service.url, Secret(KEY), timeouts=timeouts, transport=transport_kind()) as c:
        yield c


async def drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the socket without answering: the client sees a disconnect after sending."""
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(0.05)
    return web.Response(status=500)
