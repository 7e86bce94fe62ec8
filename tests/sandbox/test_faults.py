"""Injected faults: each kind appears near its configured rate, is counted, and looks like the real thing."""

import asyncio
import math
from collections import Counter

import aiohttp
import pytest

from batchgen.sandbox import FaultSpecError, Sandbox, parse_faults

SLUG = "ideogram-txt-2-img"


def within_band(observed: int, n: int, p: float) -> bool:
    """Binomial 5-sigma band, and at least one occurrence for any non-zero rate."""
    sigma = math.sqrt(n * p * (1 - p))
    return observed > 0 and abs(observed - n * p) <= 5 * sigma


def test_parse_faults() -> None:
    assert parse_faults("429=0.2, reset=0.02,") == {"429": 0.2, "reset": 0.02}
    assert parse_faults(None) == {}
    for bad, words in [
        ("boom=0.1", "unknown fault 'boom'"),
        ("429", "needs a probability"),
        ("429=x", "not a number"),
        ("429=1.5", "between 0 and 1"),
        ("429=0.1,429=0.2", "twice"),
        ("429=0.6,500=0.6", "more than 1"),
    ]:
        with pytest.raises(FaultSpecError, match=words):
            parse_faults(bad)


def test_unknown_fault_rejected_by_config() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Sandbox(faults="nope=0.1")


RATES = {"429": 0.2, "500": 0.05, "502": 0.05, "504": 0.05, "reset": 0.05, "lost": 0.05, "slow": 0.05}


async def _submit_outcome(session: aiohttp.ClientSession, url: str, i: int) -> str:
    try:
        async with session.post(f"{url}/v2/{SLUG}", json={"prompt": f"item {i}"}) as r:
            if r.status in (502, 504):
                assert r.content_type == "text/html"
            await r.read()
            return str(r.status)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        return "dropped"


async def test_api_fault_rates_over_1000_submits(sandbox_factory) -> None:
    spec = ",".join(f"{k}={v}" for k, v in RATES.items()) + ",failed=0.1"
    sb = await sandbox_factory(faults=spec, fault_seed=1234, slow_seconds=0.05)
    n = 1000
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:

        async def one(i: int) -> str:
            async with sem:
                return await _submit_outcome(session, sb.url, i)

        outcomes = Counter(await asyncio.gather(*(one(i) for i in range(n))))
    stats = sb.stats()
    injected = stats["faults_injected"]
    for kind, p in RATES.items():
        assert within_band(injected.get(kind, 0), n, p), (kind, injected)
    for code in ("429", "500", "502", "504"):
        assert outcomes[code] == injected[code] == stats["submits_rejected"][code]
    # Both a reset and a lost answer drop the connection; only the lost one created a job.
    assert outcomes["dropped"] == injected["reset"] + injected["lost"]
    assert stats["lost_submit_answers"] == injected["lost"]
    assert stats["submits_rejected"]["reset"] == injected["reset"]
    assert outcomes["200"] + injected["lost"] == stats["submits_accepted"]
    assert within_band(injected["failed"], stats["submits_accepted"], 0.1)
    assert sum(1 for job in sb.state.jobs.values() if job.error) == injected["failed"]


async def test_status_polls_see_faults_too(sandbox_factory) -> None:
    sb = await sandbox_factory(faults="500=0.3,502=0.1", fault_seed=7)
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        codes = Counter()
        for _ in range(300):
            async with session.get(f"{sb.url}/v2/requests/unknown/status") as r:
                codes[r.status] += 1
    assert within_band(codes[500], 300, 0.3) and within_band(codes[502], 300, 0.1)
    assert codes[404] == 300 - codes[500] - codes[502]
    assert sb.stats()["status_polls"] == 300


async def test_truncate_rate_and_short_body(sandbox_factory) -> None:
    sb = await sandbox_factory(faults="truncate=0.1", fault_seed=99)
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        async with session.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "p"}) as r:
            rid = (await r.json())["request_id"]
        while True:
            async with session.get(f"{sb.url}/v2/requests/{rid}") as r:
                res = await r.json()
            if res["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.02)
        url = res["images"][0]
        short = 0
        for _ in range(1000):
            try:
                async with session.get(url) as r:
                    body = await r.read()
                    assert len(body) == int(r.headers["Content-Length"])
            except aiohttp.ClientPayloadError as exc:
                assert "Not enough data" in str(exc) or "payload" in str(exc).lower()
                short += 1
    stats = sb.stats()
    assert short == stats["truncated_downloads"] == stats["faults_injected"]["truncate"]
    assert within_band(short, 1000, 0.1)
    assert stats["downloads"] == 1000


async def test_lost_submit_creates_a_job(sandbox_factory) -> None:
    sb = await sandbox_factory(faults="lost=1")
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            async with session.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "lost"}) as r:
                await r.read()
        stats = sb.stats()
        assert stats["submits_accepted"] == 1 and stats["lost_submit_answers"] == 1
        (rid,) = sb.state.jobs
        while True:  # lost only affects submits: polls answer normally
            async with session.get(f"{sb.url}/v2/requests/{rid}/status") as r:
                if (await r.json())["status"] == "COMPLETED":
                    break
            await asyncio.sleep(0.02)
        # A 400 is answered even when the fault is drawn: nothing was accepted.
        async with session.post(f"{sb.url}/v2/{SLUG}", json={"prompt": ""}) as r:
            assert r.status == 400
    assert sb.stats()["charged_usd"] == pytest.approx(0.10)


async def test_reset_is_a_connection_error(sandbox_factory) -> None:
    sb = await sandbox_factory(faults="reset=1")
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        for method, path in [("POST", f"/v2/{SLUG}"), ("GET", "/v1/get-user-credits")]:
            with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
                async with session.request(method, sb.url + path, json={"prompt": "x"}) as r:
                    await r.read()
        async with session.get(f"{sb.url}/_sandbox/stats") as r:  # the control plane is never faulted
            assert r.status == 200
    assert sb.stats()["submits_accepted"] == 0


async def test_slow_delays_but_answers(sandbox_factory) -> None:
    sb = await sandbox_factory(faults="slow=1", slow_seconds=2, time_scale=0.1)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        start = loop.time()
        async with session.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "x"}) as r:
            assert r.status == 200
        took = loop.time() - start
    assert took >= 0.15  # 2 s scaled by 0.1, less timer slack
    assert sb.stats()["faults_injected"] == {"slow": 1}


async def test_injected_429_has_reset_header(sandbox_factory) -> None:
    sb = await sandbox_factory(faults="429=1", retry_after=True)
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
        async with session.get(f"{sb.url}/v1/get-user-credits") as r:
            assert r.status == 429
            assert r.headers["x-rate-limit-reset-at-utc"].endswith("Z")
            assert int(r.headers["Retry-After"]) >= 1


async def test_same_seed_same_faults(sandbox_factory) -> None:
    async def run_once() -> list[int]:
        sb = await sandbox_factory(faults="429=0.3,500=0.3", fault_seed=5)
        async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as session:
            codes = []
            for _ in range(50):
                async with session.get(f"{sb.url}/v1/get-user-credits") as r:
                    codes.append(r.status)
        return codes

    assert await run_once() == await run_once()
