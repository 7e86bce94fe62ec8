"""Small HTTP helpers shared by the request-history tests (the emulator side of issue 11)."""

from __future__ import annotations

from typing import Any

import aiohttp

SLUG = "ideogram-txt-2-img"
HISTORY = "/inference-request/request-history"


async def submit(http: aiohttp.ClientSession, url: str, body: object) -> dict[str, Any]:
    async with http.post(f"{url}/v2/{SLUG}", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def listing(http: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    query = {k: str(v) for k, v in params.items()}
    async with http.get(f"{url}{HISTORY}", params=query) as r:
        return r.status, await r.json(content_type=None)


async def rows(http: aiohttp.ClientSession, url: str, **params: Any) -> list[dict[str, Any]]:
    status, body = await listing(http, url, **params)
    assert status == 200, body
    return body["data"]


async def one(http: aiohttp.ClientSession, url: str, request_id: str) -> tuple[int, Any]:
    async with http.get(f"{url}{HISTORY}/{request_id}") as r:
        return r.status, await r.json(content_type=None)
