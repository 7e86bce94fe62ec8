"""Client: every answer of DESIGN 1.1 maps to the typed outcome the stages act on."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web

from batchgen.api.client import (
    MAX_JSON_BYTES,
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
    Timeouts,
    extract_image,
    reset_delay,
)
from tests.support.images import make_png
from tests.support.service import KEY, drop_connection

SLUG = "ideogram-txt-2-img"
SUBMIT = f"/v2/{SLUG}"
RID = "req-0001"
STATUS = f"/v2/requests/{RID}/status"
RESULT = f"/v2/requests/{RID}"
PARAMS = {"prompt": "a red fox", "seed": 7}


def accepted_body(base: str) -> dict:
    return {
        "request_id": RID,
        "status": "QUEUED",
        "status_url": base + STATUS,
        "response_url": base + RESULT,
        "poll_url": f"{base}/v1/requests/{RID}",
    }


def no_key(outcome: object) -> None:
    assert KEY not in repr(outcome)
    assert KEY not in str(getattr(outcome, "message", ""))
    assert KEY not in str(getattr(outcome, "error", ""))


# ---- submit -----------------------------------------------------------------------------------


async def test_submit_200_is_accepted(client, service):
    service.on("POST", SUBMIT, json_body=accepted_body(service.url))
    assert await client.submit(SLUG, PARAMS) == Accepted(RID)


@pytest.mark.parametrize("missing", ["request_id", "status_url", "response_url"])
async def test_submit_2xx_without_a_pollable_answer_is_retryable_never_accepted(client, service, missing):
    body = {k: v for k, v in accepted_body(service.url).items() if k != missing}
    service.on("POST", SUBMIT, 200, json_body=body)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, Retryable)
    assert missing in out.message


async def test_submit_202_with_empty_request_id_is_retryable(client, service):
    service.on("POST", SUBMIT, 202, json_body={**accepted_body(service.url), "request_id": ""})
    assert isinstance(await client.submit(SLUG, PARAMS), Retryable)


async def test_submit_2xx_with_unsafe_request_id_is_retryable(client, service):
    service.on("POST", SUBMIT, json_body={**accepted_body(service.url), "request_id": "../../etc/passwd"})
    assert isinstance(await client.submit(SLUG, PARAMS), Retryable)


@pytest.mark.parametrize("body", ["<html><title>Welcome</title></html>", "", "[1, 2]"])
async def test_submit_2xx_non_json_object_is_retryable(client, service, body):
    service.on("POST", SUBMIT, 200, text=body, content_type="text/html")
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, Retryable)
    assert out.status == 200


async def test_submit_400_is_item_fatal_with_the_servers_message(client, service):
    service.on("POST", SUBMIT, 400, json_body={"error": "aspect_ratio: '7:3' is not supported"})
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, ItemFatal)
    assert out.status == 400
    assert "aspect_ratio: '7:3' is not supported" in out.message


@pytest.mark.parametrize(
    "body",
    [
        {"error": "Missing Authorization or x-api-key in header"},
        {"error": "Unauthorized. API key is invalid or expired"},
        {"error": "invalid_key", "error_description": "The key was revoked", "status_code": 401},
    ],
)
async def test_401_in_every_body_form_is_run_fatal_auth(client, service, body):
    service.on("POST", SUBMIT, 401, json_body=body)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RunFatal) and out.kind == "auth" and out.status == 401
    no_key(out)


async def test_401_on_a_poll_is_run_fatal_auth_too(client, service):
    service.on("GET", STATUS, 401, json_body={"error": "Unauthorized. API key is invalid"})
    out = await client.status(RID)
    assert isinstance(out, RunFatal) and out.kind == "auth"


async def test_an_answer_echoing_the_key_does_not_leak_it(client, service):
    service.on("POST", SUBMIT, 401, json_body={"error": f"API key {KEY} is invalid"})
    service.on("GET", STATUS, 500, text=f"upstream said: bad header x-api-key={KEY}")
    service.on("GET", RESULT, 422, json_body={"status": "FAILED", "error": f"key {KEY} over quota"})
    for out in (await client.submit(SLUG, PARAMS), await client.status(RID), await client.result(RID)):
        no_key(out)


async def test_403_is_run_fatal_forbidden(client, service):
    service.on("POST", SUBMIT, 403, json_body={"error": "Model not enabled for this team"})
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RunFatal) and out.kind == "forbidden"


async def test_404_on_submit_is_run_fatal_not_found(client, service):
    service.on("POST", SUBMIT, 404, json_body={"error": "Model not found"})
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RunFatal) and out.kind == "not_found"


async def test_404_on_status_and_result_is_expired(client, service):
    service.on("GET", STATUS, 404, json_body={"error": f"Request {RID} not found"})
    service.on("GET", RESULT, 404, json_body={"error": f"Request {RID} not found"})
    s = await client.status(RID)
    r = await client.result(RID)
    assert isinstance(s, Expired) and "not found" in s.message
    assert isinstance(r, Expired)


async def test_405_html_is_run_fatal_protocol(client, service):
    page = "<html><head><title>405 Not Allowed</title></head><body><h1>405</h1>nginx</body></html>"
    service.on("POST", SUBMIT, 405, text=page, content_type="text/html")
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RunFatal) and out.kind == "protocol"
    assert "405 Not Allowed" in out.message and "<" not in out.message


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"error": "Insufficient credits: balance $0.01, need $0.08"}, "credits"),
        ("Insufficient credits. Your balance is 0.02 USD and this request needs 0.08 USD", "credits"),
        ({"error": "Team spend limit exceeded for this billing period"}, "spend_limit"),
        ("Monthly spend limit reached for your team", "spend_limit"),
        ("Invalid content type", "protocol"),
    ],
)
async def test_406_run_fatal_kinds_are_told_apart_by_message(client, service, body, kind):
    if isinstance(body, dict):
        service.on("POST", SUBMIT, 406, json_body=body)
    else:
        service.on("POST", SUBMIT, 406, text=body)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RunFatal), out
    assert out.kind == kind


@pytest.mark.parametrize(
    "body",
    [
        "Value 'neon' rejected for style_type",
        "num_images must not exceed the limit of 4",
        "seed is above the allowed limit",
    ],
)
async def test_406_rejected_value_is_item_fatal(client, service, body):
    service.on("POST", SUBMIT, 406, text=body)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, ItemFatal), out
    assert body in out.message


async def test_410_is_run_fatal_retired(client, service):
    service.on("POST", SUBMIT, 410, json_body={"error": "This model has been retired"})
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RunFatal) and out.kind == "retired"


async def test_422_failed_on_status_and_result_carries_the_error(client, service):
    body = {
        "status": "FAILED",
        "error": "Content blocked by safety filter",
        "metrics": {"inference_time": 1.5},
    }
    service.on("GET", STATUS, 422, json_body=body)
    service.on("GET", RESULT, 422, json_body=body)
    s = await client.status(RID)
    r = await client.result(RID)
    assert isinstance(s, JobStatus) and s.state == "FAILED"
    assert s.error == "Content blocked by safety filter"
    assert isinstance(r, JobResult) and r.state == "FAILED"
    assert r.error == "Content blocked by safety filter"
    assert r.output_url is None and r.cost_usd is None
    assert r.inference_time == 1.5


# ---- 429 --------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_reset_delay_iso_z_with_millis():
    assert reset_delay({"x-rate-limit-reset-at-utc": "2026-03-01T12:00:42.500Z"}, NOW) == pytest.approx(42.5)


def test_reset_delay_retry_after_seconds_and_http_date():
    assert reset_delay({"Retry-After": "17"}, NOW) == 17.0
    date = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert reset_delay({"Retry-After": date}, NOW) == pytest.approx(90.0)


def test_reset_delay_prefers_the_reset_header():
    headers = {"x-rate-limit-reset-at-utc": "2026-03-01T12:00:10.000Z", "Retry-After": "99"}
    assert reset_delay(headers, NOW) == pytest.approx(10.0)


def test_reset_delay_in_the_past_is_zero_and_garbage_is_none():
    assert reset_delay({"x-rate-limit-reset-at-utc": "2026-03-01T11:59:00.000Z"}, NOW) == 0.0
    assert reset_delay({"Retry-After": "soon"}, NOW) is None
    assert reset_delay({}, NOW) is None


def _iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("form", ["reset_at", "retry_after_s", "retry_after_date"])
async def test_429_through_the_client_reads_the_reset(client, service, form):
    now = datetime.now(UTC)
    headers = {
        "reset_at": {"x-rate-limit-reset-at-utc": _iso_z(now + timedelta(seconds=120))},
        "retry_after_s": {"Retry-After": "120"},
        "retry_after_date": {"Retry-After": format_datetime(now + timedelta(seconds=120), usegmt=True)},
    }[form]
    service.on("POST", SUBMIT, 429, json_body={"error": "Rate limit exceeded"}, headers=headers)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, RateLimited)
    # Generous bounds: the header is read against the wall clock; only the arithmetic matters here.
    assert out.reset_in is not None and 100.0 <= out.reset_in <= 121.0


async def test_429_without_headers_has_no_reset(client, service):
    service.on("GET", STATUS, 429, text="Too Many Requests")
    out = await client.status(RID)
    assert isinstance(out, RateLimited) and out.reset_in is None


# ---- server and transport trouble -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "ctype", "expect"),
    [
        (
            500,
            '{"error": "Internal error while running the model"}',
            "application/json",
            "Internal error while running the model",
        ),
        (
            502,
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1>"
            "</center>\n<hr><center>cloudflare</center>\n</body>\n</html>\n" + "x" * 5000,
            "text/html",
            "502 Bad Gateway",
        ),
        (
            504,
            "<!DOCTYPE html><html><head>\n<title>\n  504 Gateway\n Time-out</title></head><body>...</body></html>",
            "text/html",
            "504 Gateway Time-out",
        ),
        (500, "Internal Server Error\n" + "trace line\n" * 500, "text/plain", "Internal Server Error"),
    ],
)
async def test_5xx_is_retryable_with_a_short_one_line_message(client, service, status, body, ctype, expect):
    service.on("POST", SUBMIT, status, text=body, content_type=ctype)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, Retryable) and out.status == status
    assert expect in out.message
    assert "\n" not in out.message and "<" not in out.message
    assert len(out.message) <= 240


async def test_connection_refused_is_retryable_and_not_sent():
    async with Client("http://127.0.0.1:1", Secret(KEY)) as c:
        out = await c.submit(SLUG, PARAMS)
    assert isinstance(out, Retryable) and out.sent is False
    no_key(out)


async def test_dropped_connection_is_retryable_and_may_have_been_sent(client, service):
    service.handle("POST", SUBMIT, drop_connection)
    out = await client.submit(SLUG, PARAMS)
    assert isinstance(out, Retryable)
    assert out.sent is True


async def test_timeout_is_retryable(service):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"status": "QUEUED"})

    service.handle("GET", STATUS, slow)
    async with Client(service.url, Secret(KEY), timeouts=Timeouts(connect=1.0, api_total=0.3, read=0.3)) as c:
        out = await c.status(RID)
    assert isinstance(out, Retryable) and out.sent is True
    assert "timeout" in out.message


async def test_huge_body_with_length_is_retryable_not_a_crash(client, service):
    service.on(
        "GET", RESULT, text=b"{" + b" " * (MAX_JSON_BYTES + 10) + b"}", content_type="application/json"
    )
    assert isinstance(await client.result(RID), Retryable)


async def test_a_small_gzip_body_that_inflates_past_the_cap_is_refused(client, service):
    # Content-Length counts the compressed bytes: within the cap, yet the answer read is over it.
    packed = gzip.compress(b"{" + b" " * (MAX_JSON_BYTES + 10) + b"}")
    assert len(packed) < MAX_JSON_BYTES // 100
    service.on("GET", STATUS, text=packed, content_type="application/json", headers={"Content-Encoding": "gzip"})
    out = await client.status(RID)
    assert isinstance(out, Retryable) and f"larger than {MAX_JSON_BYTES} bytes" in out.message


async def test_a_small_gzip_body_within_the_cap_is_read_decoded(client, service):
    packed = gzip.compress(json.dumps({"status": "PROCESSING", "metrics": {}}).encode())
    service.on("GET", STATUS, text=packed, content_type="application/json", headers={"Content-Encoding": "gzip"})
    assert await client.status(RID) == JobStatus("PROCESSING", {})


async def test_huge_chunked_body_is_retryable_not_a_crash(client, service):
    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(MAX_JSON_BYTES // 65536 + 4):
            await resp.write(b" " * 65536)
        await resp.write_eof()
        return resp

    service.handle("GET", STATUS, flood)
    assert isinstance(await client.status(RID), Retryable)


async def test_large_result_arriving_in_many_chunks_is_read_whole(client, service):
    b64 = base64.b64encode(make_png(64, 64) * 40).decode()  # an inline image of a few hundred KB
    body = json.dumps({"status": "COMPLETED", "output": b64, "metrics": {"cost": 0.08}}).encode()

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for i in range(0, len(body), 8192):
            await resp.write(body[i : i + 8192])
            if i == 0:
                await asyncio.sleep(0.2)  # the client has started reading before the rest arrives
        await resp.write_eof()
        return resp

    service.handle("GET", RESULT, chunked)
    out = await client.result(RID)
    assert isinstance(out, JobResult), out
    assert out.output_url == "data:application/octet-stream;base64," + b64
    assert out.cost_usd == 0.08


# ---- status and result ------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["QUEUED", "PROCESSING"])
async def test_status_waiting(client, service, state):
    service.on("GET", STATUS, json_body={"status": state, "metrics": {}})
    assert await client.status(RID) == JobStatus(state, {})


async def test_status_completed_with_metrics(client, service):
    metrics = {"inference_time": 20.1, "queue_time": 1.2, "total_time": 21.3}
    service.on("GET", STATUS, json_body={"status": "COMPLETED", "metrics": metrics})
    assert await client.status(RID) == JobStatus("COMPLETED", metrics)


@pytest.mark.parametrize("body", [{"status": "DONE?"}, {"status": ["QUEUED"]}, [1, 2]])
async def test_status_with_unknown_state_is_retryable(client, service, body):
    service.on("GET", STATUS, json_body=body)
    assert isinstance(await client.status(RID), Retryable)


async def test_result_completed_reads_url_and_metrics(client, service):
    url = "https://cdn.segmind.com/out/abc.png"
    body = {
        "status": "COMPLETED",
        "output": [url],
        "images": [url],
        "metrics": {"inference_time": 20.5, "cost": 0.08, "remaining_credits": 12.34},
    }
    service.on("GET", RESULT, json_body=body)
    assert await client.result(RID) == JobResult("COMPLETED", url, 0.08, 20.5, None, 12.34)


async def test_result_without_cost_leaves_it_unknown(client, service):
    service.on("GET", RESULT, json_body={"status": "COMPLETED", "output": "https://x/y.png", "metrics": {}})
    out = await client.result(RID)
    assert isinstance(out, JobResult) and out.cost_usd is None and out.remaining_credits is None


async def test_result_still_processing_names_no_image(client, service):
    service.on("GET", RESULT, json_body={"status": "PROCESSING", "output": None, "metrics": {}})
    out = await client.result(RID)
    assert isinstance(out, JobResult) and out.state == "PROCESSING" and out.output_url is None


async def test_credits(client, service):
    service.on("GET", "/v1/get-user-credits", json_body={"credits": 5.5, "free-credits": 0.5})
    assert await client.credits() == Credits(5.5, 0.5)


B64 = "iVBORw0KGgo" + "A" * 100


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ({"output": "https://cdn/x.png"}, "https://cdn/x.png"),
        ({"images": ["https://cdn/a.png", "https://cdn/b.png"]}, "https://cdn/a.png"),
        ({"output": {"url": "https://cdn/u.png"}}, "https://cdn/u.png"),
        ({"output": {"image": "https://cdn/i.png"}}, "https://cdn/i.png"),
        ({"output": {"images": ["https://cdn/n.png"]}}, "https://cdn/n.png"),
        ({"output": [{"url": "https://cdn/l.png"}]}, "https://cdn/l.png"),
        ({"image": "data:image/png;base64,iVBORw0KGgo="}, "data:image/png;base64,iVBORw0KGgo="),
        ({"output": B64}, "data:application/octet-stream;base64," + B64),
        ({"images": [], "output": "https://cdn/fallback.png"}, "https://cdn/fallback.png"),
        ({"output": None}, None),
        ({"status": "COMPLETED"}, None),
    ],
)
def test_extract_image_every_location_form(body, expect):
    assert extract_image(body) == expect


def test_extract_image_returns_other_schemes_as_is_for_refusal_later():
    assert extract_image({"output": "file:///etc/passwd"}) == "file:///etc/passwd"


# ---- headers and the key ----------------------------------------------------------------------


async def test_every_request_carries_the_key_and_posts_carry_json(client, service):
    service.on("POST", SUBMIT, json_body=accepted_body(service.url))
    service.on("GET", STATUS, json_body={"status": "QUEUED", "metrics": {}})
    service.on("GET", RESULT, json_body={"status": "COMPLETED", "output": "https://x/y.png"})
    service.on("GET", "/v1/get-user-credits", json_body={"credits": 5, "free-credits": 1})
    await client.submit(SLUG, PARAMS)
    await client.status(RID)
    await client.result(RID)
    await client.credits()
    assert [(r.method, r.path) for r in service.requests] == [
        ("POST", SUBMIT),
        ("GET", STATUS),
        ("GET", RESULT),
        ("GET", "/v1/get-user-credits"),
    ]
    for r in service.requests:
        assert r.headers.get("x-api-key") == KEY
        assert "Authorization" not in r.headers
    post = service.requests[0]
    assert post.headers.get("Content-Type") == "application/json"
    assert json.loads(post.body) == PARAMS


async def test_download_does_not_send_the_key(client, service):
    service.on("GET", "/out/abc.png", text=make_png(), content_type="image/png")
    async with client.download(service.url + "/out/abc.png") as resp:
        assert resp.status == 200
        assert await resp.read() == make_png()
    (seen,) = service.requests
    assert "x-api-key" not in {k.lower() for k in seen.headers}
    assert KEY not in json.dumps(seen.headers)


async def test_download_redirect_does_not_gain_the_key(client, service):
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(service.url + "/cdn/final.png")

    service.handle("GET", "/out/abc.png", redirect)
    service.on("GET", "/cdn/final.png", text=make_png(), content_type="image/png")
    async with client.download(service.url + "/out/abc.png") as resp:
        assert await resp.read() == make_png()
    assert len(service.requests) == 2
    assert all(KEY not in json.dumps(r.headers) for r in service.requests)


def test_key_never_in_repr_or_str():
    s = Secret(KEY)
    c = Client("https://api.segmind.com", s)
    assert KEY not in repr(c) and KEY not in str(c)
    assert KEY not in repr(s) and KEY not in str(s) and KEY not in f"{s}" and KEY not in f"{s!r}"
    assert s.reveal() == KEY
