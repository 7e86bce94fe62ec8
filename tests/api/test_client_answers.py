"""The answer table of DESIGN 1.1, answer by answer with aioresponses against the real base URL.

Nothing leaves the machine: aioresponses intercepts every request of an aiohttp session (so the
client here runs on ``AiohttpTransport``), and these tests also prove the client builds the exact
URLs of the protocol from the default base.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aioresponses import aioresponses

from batchgen.api.aiohttp_transport import AiohttpTransport
from batchgen.api.client import (
    Accepted,
    Client,
    Credits,
    Expired,
    ItemFatal,
    JobResult,
    JobStatus,
    RateLimited,
    Retryable,
    RunFatal,
    Secret,
)

BASE = "https://api.segmind.com"
SLUG = "ideogram-txt-2-img"
RID = "0f8c7a2e-1111-4222-8333-944455556666"
KEY = "SG_aioresponses_key_0123456789"
SUBMIT = f"{BASE}/v2/{SLUG}"
STATUS = f"{BASE}/v2/requests/{RID}/status"
RESULT = f"{BASE}/v2/requests/{RID}"
CREDITS = f"{BASE}/v1/get-user-credits"

ACCEPTED_BODY = {
    "request_id": RID,
    "status": "QUEUED",
    "status_url": STATUS,
    "response_url": RESULT,
    "poll_url": f"{BASE}/v1/requests/{RID}",
}


@pytest.fixture
async def client():
    async with Client(BASE, Secret(KEY), transport=AiohttpTransport()) as c:
        yield c


async def call(client: Client, endpoint: str) -> Any:
    if endpoint == "submit":
        return await client.submit(SLUG, {"prompt": "a fox"})
    if endpoint == "status":
        return await client.status(RID)
    if endpoint == "result":
        return await client.result(RID)
    return await client.credits()


URLS = {"submit": SUBMIT, "status": STATUS, "result": RESULT, "credits": CREDITS}


def mock(m: aioresponses, endpoint: str, status: int, body: Any = None, text: str | None = None, headers=None) -> None:
    method = m.post if endpoint == "submit" else m.get
    kwargs: dict[str, Any] = {"status": status, "headers": headers or {}}
    if body is not None:
        kwargs["payload"] = body
    else:
        kwargs["body"] = text or ""
        kwargs["content_type"] = "text/html" if (text or "").startswith("<") else "text/plain"
    method(URLS[endpoint], **kwargs)


CASES = [
    # endpoint, status, json body, text body, expected type, expected kind or state
    ("submit", 200, ACCEPTED_BODY, None, Accepted, None),
    ("submit", 200, {"status": "QUEUED"}, None, Retryable, None),
    ("submit", 400, {"error": "prompt is required"}, None, ItemFatal, None),
    ("submit", 401, {"error": "Missing Authorization or x-api-key in header"}, None, RunFatal, "auth"),
    ("submit", 401, {"error": "Unauthorized. API key is invalid..."}, None, RunFatal, "auth"),
    ("submit", 401, {"error": "invalid_key", "error_description": "bad key", "status_code": 401}, None, RunFatal, "auth"),
    ("submit", 403, {"error": "model not allowed for this team"}, None, RunFatal, "forbidden"),
    ("submit", 404, {"error": "model not found"}, None, RunFatal, "not_found"),
    ("submit", 405, None, "<html><title>405 Not Allowed</title></html>", RunFatal, "protocol"),
    ("submit", 406, None, "Insufficient credits: balance $0.05, need $0.10", RunFatal, "credits"),
    ("submit", 406, {"error": "Team spend limit reached"}, None, RunFatal, "spend_limit"),
    ("submit", 406, None, "Invalid content type", RunFatal, "protocol"),
    ("submit", 406, {"error": "style_type value not accepted"}, None, ItemFatal, None),
    ("submit", 410, {"error": "model retired"}, None, RunFatal, "retired"),
    ("submit", 429, {"error": "rate limited"}, None, RateLimited, None),
    ("submit", 500, {"error": "internal"}, None, Retryable, None),
    ("submit", 502, None, "<html><title>502 Bad Gateway</title></html>", Retryable, None),
    ("submit", 504, None, "<html><title>504 Gateway Time-out</title></html>", Retryable, None),
    ("status", 200, {"status": "QUEUED", "metrics": {}}, None, JobStatus, "QUEUED"),
    ("status", 200, {"status": "PROCESSING", "metrics": {}}, None, JobStatus, "PROCESSING"),
    ("status", 200, {"status": "COMPLETED", "metrics": {"total_time": 21.0}}, None, JobStatus, "COMPLETED"),
    ("status", 422, {"status": "FAILED", "error": "content blocked", "metrics": {}}, None, JobStatus, "FAILED"),
    ("status", 404, {"error": f"Request {RID} not found"}, None, Expired, None),
    ("status", 401, {"error": "Unauthorized. API key is invalid..."}, None, RunFatal, "auth"),
    ("status", 503, None, "busy", Retryable, None),
    ("result", 200, {"status": "COMPLETED", "output": ["https://cdn.example/x.png"], "metrics": {"cost": 0.1}}, None, JobResult, "COMPLETED"),
    ("result", 422, {"status": "FAILED", "error": "content blocked", "metrics": {}}, None, JobResult, "FAILED"),
    ("result", 404, {"error": f"Request {RID} not found"}, None, Expired, None),
    ("credits", 200, {"credits": 12.5, "free-credits": 1.0}, None, Credits, None),
    ("credits", 401, {"error": "Missing Authorization or x-api-key in header"}, None, RunFatal, "auth"),
]


@pytest.mark.parametrize(("endpoint", "status", "body", "text", "expected", "detail"), CASES)
async def test_every_answer_maps_to_its_outcome(client, endpoint, status, body, text, expected, detail) -> None:
    with aioresponses() as m:
        mock(m, endpoint, status, body, text)
        outcome = await call(client, endpoint)
    assert isinstance(outcome, expected), outcome
    if expected is RunFatal:
        assert outcome.kind == detail
    if expected in (JobStatus, JobResult):
        assert outcome.state == detail
    text_of = getattr(outcome, "message", "") or getattr(outcome, "error", "") or ""
    assert "\n" not in text_of and "<html" not in text_of.lower()
    assert KEY not in repr(outcome)


async def test_item_fatal_and_failed_carry_the_services_words(client) -> None:
    with aioresponses() as m:
        mock(m, "submit", 400, {"error": "seed must be between 100 and 999999"})
        mock(m, "status", 422, {"status": "FAILED", "error": "prompt blocked by safety filter", "metrics": {}})
        refused = await call(client, "submit")
        failed = await call(client, "status")
    assert "seed must be between 100 and 999999" in refused.message
    assert failed.error == "prompt blocked by safety filter"


async def test_429_waits_for_the_announced_reset(client) -> None:
    with aioresponses() as m:
        mock(m, "submit", 429, {"error": "slow down"}, headers={"Retry-After": "7"})
        outcome = await call(client, "submit")
    assert isinstance(outcome, RateLimited) and outcome.reset_in == pytest.approx(7)


async def test_result_reads_the_output_cost_and_credits(client) -> None:
    body = {
        "status": "COMPLETED",
        "output": {"url": "https://cdn.example/a.png"},
        "metrics": {"inference_time": 19.5, "cost": 0.1, "remaining_credits": 41.2},
    }
    with aioresponses() as m:
        mock(m, "result", 200, body)
        outcome = await call(client, "result")
    assert outcome.output_url == "https://cdn.example/a.png"
    assert (outcome.cost_usd, outcome.inference_time, outcome.remaining_credits) == (0.1, 19.5, 41.2)


async def test_requests_carry_the_key_header_and_json_content_type(client) -> None:
    with aioresponses() as m:
        mock(m, "submit", 200, ACCEPTED_BODY)
        await call(client, "submit")
        (key, calls), = m.requests.items()
    sent = calls[0].kwargs
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["Content-Type"] == "application/json"
    assert re.fullmatch(r'\{"prompt":"a fox"\}', sent["data"])
    assert "Authorization" not in sent["headers"]
