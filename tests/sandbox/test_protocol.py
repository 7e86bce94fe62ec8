"""Each behaviour of the wire protocol (DESIGN 1.1) observed over real HTTP, time driven by hand."""

from datetime import UTC, datetime

import aiohttp
import pytest

from tests.support.images import decode_png
from tests.support.sandbox import FakeClock

SLUG = "ideogram-txt-2-img"


async def submit(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, dict]:
    async with http.post(f"{url}/v2/{SLUG}", json=body) as r:
        return r.status, await r.json(content_type=None)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as r:
        return r.status, await r.json(content_type=None)


@pytest.fixture
async def slow_sb(sandbox_factory, clock: FakeClock):
    return await sandbox_factory(latency=10.0, latency_sigma=0.0, queue_fraction=0.2, clock=clock)


async def test_submit_shape(slow_sb, http) -> None:
    status, body = await submit(http, slow_sb.url, {"prompt": "a fox"})
    assert status == 200
    rid = body["request_id"]
    assert body["status"] == "QUEUED"
    assert body["status_url"] == f"{slow_sb.url}/v2/requests/{rid}/status"
    assert body["response_url"] == f"{slow_sb.url}/v2/requests/{rid}"
    assert body["poll_url"].startswith(f"{slow_sb.url}/v1/")


async def test_status_progression_and_metrics(slow_sb, http, clock: FakeClock) -> None:
    _, sub = await submit(http, slow_sb.url, {"prompt": "a fox"})
    assert await get(http, sub["status_url"]) == (200, {"status": "QUEUED", "metrics": {}})
    clock.advance(3)
    assert await get(http, sub["status_url"]) == (200, {"status": "PROCESSING", "metrics": {}})
    status, rb = await get(http, sub["response_url"])
    assert status == 200 and rb["status"] == "PROCESSING" and rb["output"] is None
    clock.advance(7)
    status, body = await get(http, sub["status_url"])
    assert status == 200 and body["status"] == "COMPLETED"
    assert body["metrics"] == {"queue_time": 2.0, "inference_time": 8.0, "total_time": 10.0}
    assert slow_sb.stats()["status_polls"] == 3


async def test_result_shape_cost_and_download(slow_sb, http, clock: FakeClock) -> None:
    _, sub = await submit(
        http, slow_sb.url, {"prompt": "a fox", "resolution": "RESOLUTION_768_1344", "seed": 4242}
    )
    clock.advance(10)
    status, res = await get(http, sub["response_url"])
    assert status == 200
    assert res["status"] == "COMPLETED"
    assert isinstance(res["output"], list) and res["output"] == res["images"]
    assert res["metrics"]["cost"] == pytest.approx(0.10)
    assert res["metrics"]["remaining_credits"] == pytest.approx(999.90)
    assert res["metrics"]["inference_time"] == pytest.approx(8.0)
    url = res["images"][0]
    assert url.startswith(f"{slow_sb.url}/files/") and url.endswith(".png")
    async with aiohttp.ClientSession() as anonymous:  # files need no key
        async with anonymous.get(url) as r:
            assert r.status == 200 and r.content_type == "image/png"
            png = decode_png(await r.read())
    assert (png.width, png.height) == (768, 1344)
    assert slow_sb.stats()["downloads"] == 1


@pytest.mark.parametrize("shape", ["string", "object"])
async def test_output_shape_option(sandbox_factory, http, clock: FakeClock, shape: str) -> None:
    sb = await sandbox_factory(output_shape=shape, clock=clock)
    _, sub = await submit(http, sb.url, {"prompt": "x"})
    clock.advance(1)
    _, res = await get(http, sub["response_url"])
    url = res["images"][0]
    assert res["output"] == (url if shape == "string" else {"url": url})


async def test_failed_is_422_on_both_endpoints_without_cost(slow_sb, http, clock: FakeClock) -> None:
    _, sub = await submit(http, slow_sb.url, {"prompt": "please [sandbox:fail] now"})
    assert (await get(http, sub["status_url"]))[0] == 200
    clock.advance(10)
    status, body = await get(http, sub["status_url"])
    assert status == 422 and body["status"] == "FAILED" and body["error"]
    assert "total_time" in body["metrics"]
    status, res = await get(http, sub["response_url"])
    assert status == 422 and res["status"] == "FAILED" and res["error"]
    assert "cost" not in res["metrics"] and "remaining_credits" not in res["metrics"]
    stats = slow_sb.stats()
    assert stats["failed"] == 1 and stats["charged_usd"] == 0 and stats["credits"] == 1000


async def test_unknown_request_is_404(sandbox, http) -> None:
    for suffix in ("/status", ""):
        status, body = await get(http, f"{sandbox.url}/v2/requests/nope{suffix}")
        assert status == 404 and body == {"error": "Request nope not found"}


async def test_unknown_slug_is_404(sandbox, http) -> None:
    async with http.post(f"{sandbox.url}/v2/no-such-model", json={"prompt": "x"}) as r:
        assert r.status == 404 and "no-such-model" in (await r.json())["error"]


async def test_retention_404_while_file_still_downloads(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(latency=1, retention=100, file_retention=1000, time_scale=0.5, clock=clock)
    _, sub = await submit(http, sb.url, {"prompt": "keep me"})
    clock.advance(1)
    _, res = await get(http, sub["response_url"])
    file_url = res["images"][0]
    clock.advance(48)  # 49 s < 100 * 0.5
    assert (await get(http, sub["status_url"]))[0] == 200
    clock.advance(2)  # 51 s: retention over
    rid = sub["request_id"]
    assert await get(http, sub["status_url"]) == (404, {"error": f"Request {rid} not found"})
    assert await get(http, sub["response_url"]) == (404, {"error": f"Request {rid} not found"})
    async with http.get(file_url) as r:
        assert r.status == 200
        decode_png(await r.read())
    clock.advance(450)  # past 1000 * 0.5
    async with http.get(file_url) as r:
        assert r.status == 404


async def test_missing_key_401(sandbox) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for method, path in [
            ("POST", f"/v2/{SLUG}"),
            ("GET", "/v2/requests/x/status"),
            ("GET", "/v1/get-user-credits"),
        ]:
            async with anonymous.request(method, sandbox.url + path, json={"prompt": "x"}) as r:
                assert r.status == 401
                assert await r.json() == {"error": "Missing Authorization or x-api-key in header"}
    assert sandbox.stats()["submits_rejected"] == {"401": 1}


async def test_wrong_key_401(sandbox_factory) -> None:
    sb = await sandbox_factory(api_key="right")
    async with aiohttp.ClientSession(headers={"x-api-key": "wrong"}) as s:
        async with s.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "x"}) as r:
            assert r.status == 401
            assert (await r.json())["error"].startswith("Unauthorized. API key is invalid")
    async with aiohttp.ClientSession(headers={"x-api-key": "right"}) as s:
        async with s.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "x"}) as r:
            assert r.status == 200


async def test_content_type_406(sandbox, http) -> None:
    async with http.post(f"{sandbox.url}/v2/{SLUG}", data=b'{"prompt": "x"}') as r:
        assert r.status == 406 and await r.text() == "Invalid content type"
    async with http.post(
        f"{sandbox.url}/v2/{SLUG}", data="prompt=x", headers={"Content-Type": "text/plain"}
    ) as r:
        assert r.status == 406


async def test_wrong_verb_405_html(sandbox, http) -> None:
    for method, path in [("GET", f"/v2/{SLUG}"), ("PUT", f"/v2/{SLUG}"), ("POST", "/v2/requests/x/status")]:
        async with http.request(method, sandbox.url + path) as r:
            assert r.status == 405
            assert r.content_type == "text/html" and "<html>" in await r.text()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "magic_prompt_option": "MAYBE"}, "magic_prompt_option"),
        ({"prompt": "x", "style_type": "PHOTO"}, "style_type"),
        ({"prompt": "x", "resolution": "RESOLUTION_1000_1000"}, "resolution"),
        ({"prompt": "x", "resolution": "1024x1024"}, "resolution"),
        ({"prompt": "x", "seed": 99}, "seed"),
        ({"prompt": "x", "seed": 1000000}, "seed"),
        ({"prompt": "x", "seed": "123"}, "seed"),
        ({"prompt": "x", "negative_prompt": ["a"]}, "negative_prompt"),
        ({"prompt": "x", "color_palette": {"name": "NEON"}}, "color_palette.name"),
        ({"prompt": "x", "color_palette": {"members": []}}, "color_palette.members"),
        (
            {"prompt": "x", "color_palette": {"members": [{"color_hex": "red", "color_weight": 0.5}]}},
            "color_palette.members[0].color_hex",
        ),
        (
            {"prompt": "x", "color_palette": {"members": [{"color_hex": "#FF0000", "color_weight": 0.01}]}},
            "color_palette.members[0].color_weight",
        ),
        ({"prompt": "x", "color_palette": {"name": "EMBER", "members": []}}, "color_palette"),
        ({"prompt": "x", "steps": 30}, "steps"),
    ],
)
async def test_parameter_rules_400(sandbox, http, body: dict, field: str) -> None:
    status, answer = await submit(http, sandbox.url, body)
    assert status == 400
    assert field in answer["error"]
    stats = sandbox.stats()
    assert stats["submits_rejected"] == {"400": 1} and stats["submits_accepted"] == 0


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"prompt"', b"{not json", b""])
async def test_body_must_be_json_object_400(sandbox, http, raw: bytes) -> None:
    async with http.post(
        f"{sandbox.url}/v2/{SLUG}", data=raw, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and "error" in await r.json()


@pytest.mark.parametrize(
    "palette",
    [
        {"name": "PASTEL"},
        {
            "members": [
                {"color_hex": "#A1B2C3", "color_weight": 0.05},
                {"color_hex": "#ffffff", "color_weight": 1.0},
            ]
        },
    ],
)
async def test_full_valid_bodies_accepted(sandbox, http, palette: dict) -> None:
    body = {
        "prompt": "A poster that says 'Stay calm'",
        "negative_prompt": "low quality",
        "magic_prompt_option": "OFF",
        "resolution": "RESOLUTION_1536_512",
        "seed": 999999,
        "style_type": "RENDER_3D",
        "color_palette": palette,
    }
    assert (await submit(http, sandbox.url, body))[0] == 200


async def test_credits_charged_only_on_completed(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(latency=10, credits=0.25, price=0.10, clock=clock)
    _, ok = await submit(http, sb.url, {"prompt": "ok"})
    _, bad = await submit(http, sb.url, {"prompt": "[sandbox:fail]"})
    assert (await submit(http, sb.url, {"prompt": ""}))[0] == 400
    assert sb.stats()["charged_usd"] == 0 and sb.stats()["in_flight"] == 2
    clock.advance(10)
    stats = sb.stats()
    assert stats["charged_usd"] == pytest.approx(0.10) and stats["credits"] == pytest.approx(0.15)
    assert stats["completed"] == 1 and stats["failed"] == 1 and stats["in_flight"] == 0
    _, res = await get(http, ok["response_url"])
    assert res["metrics"]["cost"] == pytest.approx(0.10)
    assert res["metrics"]["remaining_credits"] == pytest.approx(0.15)
    # Reading a result again never charges again.
    await get(http, ok["response_url"])
    assert sb.stats()["charged_usd"] == pytest.approx(0.10)

    await submit(http, sb.url, {"prompt": "second"})
    clock.advance(10)
    status, body = await submit(http, sb.url, {"prompt": "third"})
    assert status == 406
    assert body["error"] == "Insufficient credits: balance $0.05, need $0.10"
    assert await get(http, f"{sb.url}/v1/get-user-credits") == (
        200,
        {"credits": pytest.approx(0.05), "free-credits": 0},
    )
    assert sb.stats()["submits_rejected"] == {"400": 1, "406": 1}

    async with http.post(f"{sb.url}/_sandbox/credits", json={"credits": 5}) as r:
        assert r.status == 200 and (await r.json())["credits"] == 5
    assert (await submit(http, sb.url, {"prompt": "third"}))[0] == 200
    sb.set_credits(0)
    assert (await submit(http, sb.url, {"prompt": "fourth"}))[0] == 406


async def test_credits_endpoint_needs_key(sandbox) -> None:
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{sandbox.url}/v1/get-user-credits") as r:
            assert r.status == 401


def _parse_reset(value: str) -> datetime:
    assert value.endswith("Z")
    return datetime.fromisoformat(value)


async def test_rate_limit_submit_scope(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(rpm=3, rpm_scope="submit", clock=clock, time_scale=0.5)
    for _ in range(3):
        assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 200
    async with http.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "x"}) as r:
        assert r.status == 429
        assert "Retry-After" not in r.headers
        reset = _parse_reset(r.headers["x-rate-limit-reset-at-utc"])
    delta = (reset - datetime.now(UTC)).total_seconds()
    assert 25 < delta <= 31  # the 60 s window, scaled by 0.5
    # Polls do not count in this scope.
    for _ in range(10):
        assert (await get(http, f"{sb.url}/v1/get-user-credits"))[0] == 200
    # Another key has its own budget.
    async with aiohttp.ClientSession(headers={"x-api-key": "other"}) as other:
        async with other.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "x"}) as r:
            assert r.status == 200
    clock.advance(30)
    assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 200
    stats = sb.stats()
    assert stats["rate_limited"] == 1 and stats["submits_rejected"] == {"429": 1}


async def test_rate_limit_all_scope_with_retry_after(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(rpm=3, rpm_scope="all", retry_after=True, clock=clock)
    _, sub = await submit(http, sb.url, {"prompt": "x"})
    assert (await get(http, sub["status_url"]))[0] == 200
    assert (await get(http, f"{sb.url}/v1/get-user-credits"))[0] == 200
    async with http.get(sub["status_url"]) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "60"
        _parse_reset(r.headers["x-rate-limit-reset-at-utc"])
    clock.advance(20)
    assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 429
    clock.advance(40)
    assert (await get(http, sub["status_url"]))[0] == 200


async def test_sliding_window(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(rpm=2, rpm_window="sliding", clock=clock)
    assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 200
    clock.advance(30)
    assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 200
    clock.advance(29)
    assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 429
    clock.advance(2)  # the first stamp left the window
    assert (await submit(http, sb.url, {"prompt": "x"}))[0] == 200


async def test_stats_endpoint_and_duplicates(sandbox, http) -> None:
    for body in ({"prompt": "a", "seed": 100}, {"seed": 100, "prompt": "a"}, {"prompt": "b"}):
        assert (await submit(http, sandbox.url, body))[0] == 200
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{sandbox.url}/_sandbox/stats") as r:
            stats = await r.json()
    assert stats["submits_accepted"] == 3 and stats["duplicates"] == 1
    for key in (
        "submits_rejected",
        "lost_submit_answers",
        "status_polls",
        "result_fetches",
        "downloads",
        "in_flight",
        "charged_usd",
    ):
        assert key in stats


async def test_stats_measure_how_long_a_finished_result_waited_for_its_reader(slow_sb, http, clock: FakeClock) -> None:
    _, sub = await submit(http, slow_sb.url, {"prompt": "a fox"})
    clock.advance(12.5)  # ready at 10 s, read at 12.5 s
    await get(http, sub["response_url"])
    clock.advance(5)
    await get(http, sub["response_url"])  # a second read does not count again
    delays = slow_sb.stats()["ready_to_fetch_s"]
    assert delays["n"] == 1
    assert delays["median"] == pytest.approx(2.5)
