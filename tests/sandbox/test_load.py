"""Many concurrent clients running full cycles see no error that was not injected."""

import asyncio
import time

import aiohttp

from tests.support.images import decode_png

SLUG = "ideogram-txt-2-img"
RESOLUTIONS = ["RESOLUTION_1024_1024", "RESOLUTION_640_1536", "RESOLUTION_1536_640", "RESOLUTION_896_1152"]


async def test_64_clients_500_cycles(sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.05, latency_sigma=0.35)
    cycles = 500
    clients = 64
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(cycles):
        queue.put_nowait(i)
    errors: list[str] = []
    done = 0

    async def client() -> None:
        nonlocal done
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(headers={"x-api-key": "load"}, connector=connector) as s:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                resolution = RESOLUTIONS[i % len(RESOLUTIONS)]
                body = {"prompt": f"load item {i}", "seed": 100 + i, "resolution": resolution}
                async with s.post(f"{sb.url}/v2/{SLUG}", json=body) as r:
                    if r.status != 200:
                        errors.append(f"submit {r.status}")
                        continue
                    sub = await r.json()
                while True:
                    async with s.get(sub["status_url"]) as r:
                        state = (await r.json())["status"]
                    if state == "COMPLETED":
                        break
                    if state == "FAILED":
                        errors.append("FAILED")
                        break
                    await asyncio.sleep(0.02)
                async with s.get(sub["response_url"]) as r:
                    res = await r.json()
                async with s.get(res["images"][0]) as r:
                    png = decode_png(await r.read())
                w, h = map(int, resolution.split("_")[1:])
                if (png.width, png.height) != (w, h):
                    errors.append("size")
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    stats = sb.stats()
    assert errors == []
    assert done == cycles
    assert stats["submits_accepted"] == cycles and stats["completed"] == cycles
    assert stats["downloads"] == cycles and stats["in_flight"] == 0
    assert stats["charged_usd"] == cycles * 0.10
    print(
        f"\nsandbox load: {stats['requests_total']} requests in {elapsed:.2f}s "
        f"= {stats['requests_total'] / elapsed:.0f} requests/s (clients decode every PNG in the same process)"
    )
