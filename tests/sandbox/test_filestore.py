"""With a store folder, a restarted emulator serves the output files of an earlier one."""

from __future__ import annotations

import aiohttp

from batchgen.sandbox import Sandbox
from tests.support.images import decode_png


async def _one_image(sb: Sandbox) -> tuple[str, bytes]:
    async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:
        async with http.post(f"{sb.url}/v2/ideogram-txt-2-img",
                             json={"prompt": "a lighthouse", "seed": 4242, "resolution": "RESOLUTION_512_1536"}) as r:
            rid = (await r.json())["request_id"]
        while True:
            async with http.get(f"{sb.url}/v2/requests/{rid}") as r:
                body = await r.json()
            if body["status"] == "COMPLETED":
                break
        url = body["output"][0] if isinstance(body["output"], list) else body["output"]
        async with http.get(url) as r:
            assert r.status == 200
            return url, await r.read()


async def test_a_restarted_emulator_serves_an_earlier_url(tmp_path):
    async with Sandbox(latency=0.01, latency_sigma=0.0, store_dir=str(tmp_path / "store")) as first:
        url, data = await _one_image(first)
        port = first.port
    async with Sandbox(port=port, latency=0.01, latency_sigma=0.0, store_dir=str(tmp_path / "store")) as second:
        assert second.stats()["submits_accepted"] == 0
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200
            again = await r.read()
    assert again == data
    png = decode_png(again)
    assert (png.width, png.height) == (512, 1536)


async def test_without_a_store_an_earlier_url_is_gone(tmp_path):
    async with Sandbox(latency=0.01, latency_sigma=0.0) as first:
        url, _ = await _one_image(first)
        port = first.port
    async with Sandbox(port=port, latency=0.01, latency_sigma=0.0, store_dir=str(tmp_path / "other")) as second:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 404
        assert second.url.endswith(str(port))


async def test_failed_jobs_and_odd_names_leave_no_file(tmp_path):
    async with Sandbox(latency=0.01, latency_sigma=0.0, store_dir=str(tmp_path / "store")) as sb:
        async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:
            async with http.post(f"{sb.url}/v2/ideogram-txt-2-img", json={"prompt": "x [sandbox:fail]"}) as r:
                assert r.status == 200
            async with http.get(f"{sb.url}/files/..%2Fescape.png") as r:
                assert r.status == 404
    assert [p.name for p in (tmp_path / "store").iterdir()] == []
