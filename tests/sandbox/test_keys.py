"""Per key in the emulator: a key reads only its own requests, a revoked key is refused, and each
key's requests and rate-limit windows are counted apart (what a key-pool test observes)."""

import aiohttp

SLUG = "ideogram-txt-2-img"


async def call(sb_url: str, key: str, method: str, path: str, body: object = None) -> int:
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:
        async with http.request(method, sb_url + path, json=body) as r:
            return r.status


async def test_a_key_reads_its_own_requests_only(sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.0)
    async with aiohttp.ClientSession(headers={"x-api-key": "key-a"}) as http:
        async with http.post(f"{sb.url}/v2/{SLUG}", json={"prompt": "a fox"}) as r:
            rid = (await r.json())["request_id"]
    for path in (f"/v2/requests/{rid}/status", f"/v2/requests/{rid}"):
        assert await call(sb.url, "key-b", "GET", path) == 404  # as unknown as a made-up id
        assert await call(sb.url, "key-a", "GET", path) == 200
    assert sb.state.keys.stats("key-b") == {"status": 1, "result": 1, "foreign": 2}
    assert sb.state.keys.stats("key-a") == {"submit": 1, "submits_accepted": 1, "status": 1, "result": 1}
    assert "key-a" not in str(sb.stats())  # the HTTP counters never name a key


async def test_a_revoked_key_is_refused_from_then_on(sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.0)
    assert await call(sb.url, "key-a", "GET", "/v1/get-user-credits") == 200
    sb.state.keys.revoke("key-a")
    assert await call(sb.url, "key-a", "GET", "/v1/get-user-credits") == 401
    assert await call(sb.url, "key-a", "POST", f"/v2/{SLUG}", {"prompt": "a fox"}) == 401
    assert await call(sb.url, "key-b", "POST", f"/v2/{SLUG}", {"prompt": "a fox"}) == 200


async def test_each_key_has_its_own_rate_window(sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.0, rpm=2)
    codes = [await call(sb.url, key, "POST", f"/v2/{SLUG}", {"prompt": f"a fox {i}"})
             for i, key in enumerate(["key-a"] * 3 + ["key-b"] * 2)]
    assert codes == [200, 200, 429, 200, 200]
    assert sb.state.limiter.windows == {"key-a": 1, "key-b": 1}
    assert sb.state.keys.stats("key-a")["rate_limited"] == 1
