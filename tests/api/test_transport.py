"""The client over MockTransport: every answer and every failure to answer maps to its outcome, no socket.

What a mock cannot show (bodies in pieces, resets, real timeouts and redirects) stays on a socket in
test_client.py; here the answer table runs in microseconds and the requests the client builds are
read back field by field.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import pytest

from batchgen.api.aiohttp_transport import AiohttpTransport
from batchgen.api.client import (
    MAX_DOWNLOAD_REDIRECTS,
    MAX_JSON_BYTES,
    USER_AGENT,
    Client,
    Expired,
    ItemFatal,
    JobResult,
    JobStatus,
    RateLimited,
    Retryable,
    RunFatal,
    Secret,
    Timeouts,
)
from batchgen.api.deferred_transport import HTTP_ENV, DeferredTransport
from batchgen.api.http11 import Http11Transport
from batchgen.api.mock_transport import MockTransport
from batchgen.api.outcomes import Credits
from batchgen.api.transport import (
    BodyTooLarge,
    ConnectFailed,
    Request,
    RequestTimeout,
    Response,
    TimedOut,
    TransportError,
)
from batchgen.core.errors import ExitCode, UserError
from tests.api.test_client_answers import (
    ACCEPTED_BODY,
    BASE,
    CASES,
    CREDITS,
    KEY,
    RESULT,
    RID,
    SLUG,
    STATUS,
    SUBMIT,
)
from tests.support.images import make_png

TIMEOUTS = Timeouts(connect=1.5, api_total=7.0, read=3.0, download_total=40.0)
URLS = {"submit": SUBMIT, "status": STATUS, "result": RESULT, "credits": CREDITS}


def answer(status: int, body: Any = None, text: str | None = None, headers: dict[str, str] | None = None) -> Response:
    if body is not None:
        return Response.with_json(status, body, headers)
    ctype = "text/html" if (text or "").startswith("<") else "text/plain"
    return Response(status, {"Content-Type": ctype, **(headers or {})}, (text or "").encode())


def client_with(handler) -> tuple[Client, MockTransport]:
    transport = MockTransport(handler)
    return Client(BASE, Secret(KEY), timeouts=TIMEOUTS, transport=transport), transport


async def call(client: Client, endpoint: str) -> Any:
    if endpoint == "submit":
        return await client.submit(SLUG, {"prompt": "a fox"})
    if endpoint == "status":
        return await client.status(RID)
    if endpoint == "result":
        return await client.result(RID)
    return await client.credits()


@pytest.mark.parametrize(("endpoint", "status", "body", "text", "expected", "detail"), CASES)
async def test_every_answer_maps_to_its_outcome(endpoint, status, body, text, expected, detail) -> None:
    client, transport = client_with(lambda request: answer(status, body, text))
    async with client:
        outcome = await call(client, endpoint)
    assert isinstance(outcome, expected), outcome
    if expected is RunFatal:
        assert outcome.kind == detail
    if expected in (JobStatus, JobResult):
        assert outcome.state == detail
    text_of = getattr(outcome, "message", "") or getattr(outcome, "error", "") or ""
    assert "\n" not in text_of and "<html" not in text_of.lower()
    assert KEY not in repr(outcome)
    (sent,) = transport.requests
    assert (sent.method, sent.url) == ("POST" if endpoint == "submit" else "GET", URLS[endpoint])


async def test_api_requests_carry_the_key_the_limits_and_no_redirects() -> None:
    client, transport = client_with(lambda request: answer(200, {"status": "QUEUED", "metrics": {}}))
    async with client:
        await client.submit(SLUG, {"prompt": "café ☕", "seed": 7})
        await client.status(RID)
    post, get = transport.requests
    for r in (post, get):
        assert r.headers["x-api-key"] == KEY and r.headers["User-Agent"] == USER_AGENT
        assert "Authorization" not in r.headers
        assert r.timeout == RequestTimeout(total=7.0, connect=1.5, read=3.0)
        assert r.max_body == MAX_JSON_BYTES and r.max_redirects == 0
    assert post.headers["Content-Type"] == "application/json"
    assert post.json() == {"prompt": "café ☕", "seed": 7} and "café ☕" in (post.body or "")
    assert get.body is None and "Content-Type" not in get.headers


@pytest.mark.parametrize(
    ("failure", "sent", "said"),
    [
        (TimedOut(), True, "no answer within the timeout"),
        (ConnectFailed("Connection refused"), False, "cannot connect (Connection refused)"),
        (TransportError("ServerDisconnectedError"), True, "connection failed (ServerDisconnectedError)"),
    ],
)
@pytest.mark.parametrize("endpoint", ["submit", "status", "result", "credits"])
async def test_no_answer_is_retryable_and_says_whether_it_was_sent(endpoint, failure, sent, said) -> None:
    def handler(request: Request) -> Response:
        raise failure

    client, _ = client_with(handler)
    async with client:
        outcome = await call(client, endpoint)
    assert isinstance(outcome, Retryable), outcome
    assert outcome.sent is sent and outcome.status is None and said in outcome.message


async def test_the_body_cap_holds_to_the_byte() -> None:
    head = b'{"status":"QUEUED","metrics":{}}'
    at_cap = head + b" " * (MAX_JSON_BYTES - len(head))
    bodies = {STATUS: at_cap, RESULT: at_cap + b" "}
    client, _ = client_with(lambda request: Response(200, {}, bodies[request.url]))
    async with client:
        assert await client.status(RID) == JobStatus("QUEUED", {})  # exactly the cap: read whole
        over = await client.result(RID)
    assert isinstance(over, Retryable) and over.status == 200
    assert over.message == f"HTTP 200: answer larger than {MAX_JSON_BYTES} bytes"


async def test_a_declared_flood_is_refused_before_reading() -> None:
    def handler(request: Request) -> Response:
        raise BodyTooLarge(503, 10**9)

    client, _ = client_with(handler)
    async with client:
        outcome = await client.status(RID)
    assert outcome == Retryable("HTTP 503: answer too large (1000000000 bytes)", 503)

    client, _ = client_with(lambda request: Response(200, {"Content-Length": str(MAX_JSON_BYTES + 1)}, b"{}"))
    async with client:
        outcome = await client.result(RID)
    assert isinstance(outcome, Retryable) and f"({MAX_JSON_BYTES + 1} bytes)" in outcome.message


async def test_a_redirect_is_an_answer_never_followed_with_the_key() -> None:
    client, transport = client_with(lambda request: Response(302, {"Location": "https://elsewhere.example/"}))
    async with client:
        outcome = await client.submit(SLUG, {"prompt": "x"})
    assert isinstance(outcome, RunFatal) and outcome.kind == "protocol" and outcome.status == 302
    assert [r.url for r in transport.requests] == [SUBMIT]


async def test_an_echoed_key_never_reaches_the_outcome() -> None:
    client, _ = client_with(lambda request: answer(400, {"error": f"bad request from key {KEY}"}))
    async with client:
        outcome = await client.submit(SLUG, {"prompt": "x"})
    assert isinstance(outcome, ItemFatal) and "***" in outcome.message and KEY not in repr(outcome)


async def test_headers_are_read_in_any_spelling() -> None:
    client, _ = client_with(lambda request: answer(429, {"error": "slow down"}, headers={"retry-after": "7"}))
    async with client:
        outcome = await client.submit(SLUG, {"prompt": "x"})
    assert isinstance(outcome, RateLimited) and outcome.reset_in == pytest.approx(7)


async def test_an_async_handler_can_answer_by_route() -> None:
    async def service(request: Request) -> Response:
        if request.url == SUBMIT:
            return answer(200, ACCEPTED_BODY)
        if request.url == STATUS:
            return answer(404, {"error": "gone"})
        return answer(599, text="unscripted")

    client, _ = client_with(service)
    async with client:
        assert (await client.submit(SLUG, {"prompt": "x"})).request_id == RID
        assert isinstance(await client.status(RID), Expired)
        assert isinstance(await client.credits(), Retryable)


async def test_download_streams_without_the_key() -> None:
    png = make_png(64, 64)
    client, transport = client_with(lambda request: Response(200, {"Content-Type": "image/png"}, png))
    async with client:
        async with client.download("https://cdn.example/out/a.png") as resp:
            assert resp.status == 200 and resp.content_length == len(png)
            chunks = [c async for c in resp.content.iter_chunked(100)]
    assert b"".join(chunks) == png and max(map(len, chunks)) == 100
    (sent,) = transport.requests
    assert "x-api-key" not in {k.lower() for k in sent.headers} and sent.body is None
    assert sent.max_redirects == MAX_DOWNLOAD_REDIRECTS
    assert sent.timeout == RequestTimeout(total=40.0, connect=1.5, read=3.0)


async def test_the_client_opens_and_closes_its_transport() -> None:
    client, transport = client_with(lambda request: answer(200, {"credits": 1, "free-credits": 0}))
    async with client:
        assert transport.is_open and client.transport is transport
    assert not transport.is_open
    with pytest.raises(RuntimeError):
        _ = client.session  # only the aiohttp transport has one
    assert isinstance(Client(BASE, Secret(KEY)).transport, DeferredTransport)


@pytest.mark.parametrize(("choice", "kind"), [(None, Http11Transport), ("http11", Http11Transport), ("aiohttp", AiohttpTransport)])
async def test_the_default_transport_is_made_on_the_first_request(sandbox, monkeypatch, choice, kind) -> None:
    """A command that sends nothing never pays a transport's import and setup: they come with the
    first request. HTTP/1.1 on asyncio by default; aiohttp, the earlier default, when asked for."""
    if choice is None:
        monkeypatch.delenv(HTTP_ENV, raising=False)
    else:
        monkeypatch.setenv(HTTP_ENV, choice)
    client = Client(sandbox.url, Secret(KEY))
    deferred = client.transport
    assert isinstance(deferred, DeferredTransport)
    async with client:
        assert not deferred.started
        assert isinstance(await client.credits(), Credits)
        assert deferred.started and isinstance(deferred.real(), kind)
        if kind is AiohttpTransport:
            assert client.session is deferred.real().session
        else:
            with pytest.raises(RuntimeError, match="no aiohttp session"):
                _ = client.session
    assert not deferred.started  # closed with the client
    with pytest.raises(RuntimeError, match="not open"):
        await client.credits()  # never a new session that nobody would close
    async with client:  # opened again, it works again
        assert isinstance(await client.credits(), Credits) and deferred.started


def test_an_unknown_transport_choice_is_refused_before_anything_is_sent(monkeypatch) -> None:
    monkeypatch.setenv(HTTP_ENV, "curl")
    with pytest.raises(UserError, match="BATCHGEN_HTTP='curl': expected 'http11'") as caught:
        Client(BASE, Secret(KEY))
    assert caught.value.code == ExitCode.BAD_INPUT


def test_a_command_that_sends_nothing_does_not_import_aiohttp(tmp_path) -> None:
    code = ("import sys, anyio\n"
            "from batchgen.api.client import Client\n"
            "from batchgen.api.outcomes import Secret\n"
            "async def main():\n"
            "    async with Client('http://127.0.0.1:9', Secret('SG_x_123456789')):\n"
            "        pass\n"
            "anyio.run(main)\n"
            "print('aiohttp' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


async def test_requests_on_the_default_transport_never_import_aiohttp(sandbox) -> None:
    """aiohttp's import (0.15-0.2 s) is paid only by a run that asks for it (BATCHGEN_HTTP=aiohttp)."""
    code = ("import sys, anyio\n"
            "from batchgen.api.client import Client\n"
            "from batchgen.api.outcomes import Secret\n"
            "async def main():\n"
            f"    async with Client(sys.argv[1], Secret({KEY!r})) as client:\n"
            "        print(type(await client.credits()).__name__)\n"
            "anyio.run(main)\n"
            "print('aiohttp' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != HTTP_ENV}
    done = await anyio.run_process([sys.executable, "-c", code, sandbox.url], env=env)
    assert done.stdout.decode().split() == ["Credits", "False"]
