"""The history endpoints behind the same gates as the v2 calls: key, rate limit, faults; and switched off."""

import argparse
import asyncio

import aiohttp
import pytest

from batchgen.sandbox import Sandbox, SandboxConfig
from batchgen.sandbox.cli import add_sandbox_arguments, config_from_args
from tests.sandbox.history_helpers import HISTORY, SLUG, listing, one, rows, submit
from tests.support.sandbox import FakeClock

DROPPED = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


async def test_both_endpoints_need_a_key(sandbox) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for path in (HISTORY, f"{HISTORY}/some-id"):
            async with anonymous.get(sandbox.url + path) as r:
                assert r.status == 401
                assert await r.json() == {"error": "Missing Authorization or x-api-key in header"}


async def test_wrong_key_is_401(sandbox_factory) -> None:
    sb = await sandbox_factory(api_key="right")
    async with aiohttp.ClientSession(headers={"x-api-key": "wrong"}) as s:
        async with s.get(sb.url + HISTORY) as r:
            assert r.status == 401


async def test_only_the_callers_own_requests(sandbox, http) -> None:
    mine = (await submit(http, sandbox.url, {"prompt": "mine"}))["request_id"]
    async with aiohttp.ClientSession(headers={"x-api-key": "someone-else"}) as other:
        theirs = (await submit(other, sandbox.url, {"prompt": "theirs"}))["request_id"]
        assert [r["request_id"] for r in await rows(other, sandbox.url)] == [theirs]
        assert await one(other, sandbox.url, mine) == (404, {"error": f"Request {mine} not found"})
    assert [r["request_id"] for r in await rows(http, sandbox.url)] == [mine]
    assert (await one(http, sandbox.url, theirs))[0] == 404
    assert await one(http, sandbox.url, "no-such-id") == (404, {"error": "Request no-such-id not found"})


async def test_history_counts_against_rpm_like_polls(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(rpm=2, rpm_scope="all", retry_after=True, clock=clock)
    rid = (await submit(http, sb.url, {"prompt": "x"}))["request_id"]
    assert (await listing(http, sb.url))[0] == 200
    async with http.get(f"{sb.url}{HISTORY}/{rid}") as r:
        assert r.status == 429
        assert r.headers["x-rate-limit-reset-at-utc"].endswith("Z") and r.headers["Retry-After"]
    clock.advance(60)
    assert (await one(http, sb.url, rid))[0] == 200
    assert sb.stats()["rate_limited"] == 1


async def test_history_is_free_when_only_submits_count(sandbox_factory, http) -> None:
    sb = await sandbox_factory(rpm=1, rpm_scope="submit")
    await submit(http, sb.url, {"prompt": "x"})
    for _ in range(5):
        assert (await listing(http, sb.url))[0] == 200
    assert sb.stats()["rate_limited"] == 0


@pytest.mark.parametrize("code", [429, 500, 502, 504])
async def test_injected_http_faults(sandbox_factory, http, code: int) -> None:
    sb = await sandbox_factory(faults=f"{code}=1")
    for path in (HISTORY, f"{HISTORY}/any-id"):
        async with http.get(sb.url + path) as r:
            assert r.status == code
            if code == 429:
                assert "x-rate-limit-reset-at-utc" in r.headers
            if code in (502, 504):
                assert r.content_type == "text/html"
    stats = sb.stats()
    assert stats["faults_injected"] == {str(code): 2} and stats["history_requests"] == 2
    assert stats["submits_rejected"] == {}  # history faults are not submit rejections


async def test_injected_reset_and_slow(sandbox_factory, http) -> None:
    sb = await sandbox_factory(faults="reset=1")
    with pytest.raises(DROPPED):
        async with http.get(sb.url + HISTORY) as r:
            await r.read()
    sb = await sandbox_factory(faults="slow=1", slow_seconds=2, time_scale=0.1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await listing(http, sb.url))[0] == 200
    assert loop.time() - start >= 0.15  # 2 s scaled by 0.1, less timer slack
    assert sb.stats()["faults_injected"] == {"slow": 1}


async def test_history_off_answers_404_on_both(sandbox_factory, http) -> None:
    sb = await sandbox_factory(history=False)
    rid = (await submit(http, sb.url, {"prompt": "x"}))["request_id"]
    assert (await listing(http, sb.url))[0] == 404
    assert (await one(http, sb.url, rid))[0] == 404
    async with http.get(f"{sb.url}/v2/requests/{rid}/status") as r:
        assert r.status in (200, 422)  # the v2 API is unaffected
    assert sb.stats()["history_requests"] == 0


async def test_stats_count_history_requests_and_nothing_else(sandbox, http) -> None:
    rid = (await submit(http, sandbox.url, {"prompt": "x"}))["request_id"]
    await listing(http, sandbox.url)
    await listing(http, sandbox.url, per_page=0)  # a 400 still counts as a request
    await one(http, sandbox.url, rid)
    stats = sandbox.stats()
    assert stats["history_requests"] == 3
    assert stats["status_polls"] == stats["result_fetches"] == stats["credit_checks"] == 0
    assert stats["not_found"] == 0 and stats["submit_requests"] == 1
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{sandbox.url}/_sandbox/stats") as r:
            assert (await r.json())["history_requests"] == 3


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"history_lag": -1}, "history_lag"),
        ({"history_outputs": 0}, "history_outputs"),
        ({"history_outputs": 1.5}, "history_outputs"),
        ({"history_body": "xml"}, "history_body"),
        ({"history_dates": "unix"}, "history_dates"),
        ({"history": "off"}, "history"),
    ],
)
def test_bad_history_options(options: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SandboxConfig(**options)


def test_cli_flags_reach_the_config() -> None:
    parser = argparse.ArgumentParser(prog="batchgen sandbox")
    add_sandbox_arguments(parser)
    assert config_from_args(parser.parse_args([])) == SandboxConfig()
    args = parser.parse_args(
        "--history off --history-lag 12.5 --history-outputs 3 --history-body string --history-dates http".split()
    )
    config = config_from_args(args)
    assert (config.history, config.history_lag, config.history_outputs) == (False, 12.5, 3)
    assert (config.history_body, config.history_dates) == ("string", "http")
    help_text = parser.format_help()
    for flag in ("--history ", "--history-lag", "--history-outputs", "--history-body", "--history-dates"):
        assert flag in help_text
    assert "request-history" in help_text


async def test_python_api_switch(http) -> None:
    async with Sandbox(latency=0.01, history=False) as sb:
        async with http.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "x"}) as r:
            assert r.status == 200
        assert (await listing(http, sb.url))[0] == 404
