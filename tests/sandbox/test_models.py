"""The emulator serves any registered model: its parameters, its price and the image size its entry says."""

from __future__ import annotations

import aiohttp
import pytest

from batchgen.models import DEFAULT_IMAGE_SIZE, ModelSpec, Param
from tests.support.images import decode_png
from tests.support.models import ASPECT_SIZES, TOY_SLUG, registered, toy_model
from tests.support.sandbox import FakeClock


async def _run_one(http: aiohttp.ClientSession, url: str, slug: str, body: dict, clock: FakeClock) -> tuple[dict, tuple[int, int]]:
    async with http.post(f"{url}/v2/{slug}", json=body) as r:
        assert r.status == 200, await r.text()
        sub = await r.json()
    clock.advance(1)
    async with http.get(sub["response_url"]) as r:
        res = await r.json()
    assert res["status"] == "COMPLETED", res
    async with http.get(res["images"][0]) as r:
        png = decode_png(await r.read())
    return res, (png.width, png.height)


@pytest.mark.parametrize("aspect", list(ASPECT_SIZES))
async def test_image_size_comes_from_the_model_entry(sandbox_factory, http, clock: FakeClock, aspect: str) -> None:
    with registered(toy_model()):
        sb = await sandbox_factory(clock=clock)
        res, size = await _run_one(http, sb.url, TOY_SLUG, {"prompt": "a kite", "aspect_ratio": aspect}, clock)
    assert size == ASPECT_SIZES[aspect]
    assert res["metrics"]["cost"] == pytest.approx(0.02)  # the entry's price


async def test_a_model_without_a_size_parameter_gets_the_default_size(sandbox_factory, http, clock: FakeClock) -> None:
    plain = ModelSpec("plain-model", (Param("prompt", "string", required=True),), 0.05, 1.0)
    with registered(plain):
        sb = await sandbox_factory(clock=clock)
        _, size = await _run_one(http, sb.url, "plain-model", {"prompt": "a kite"}, clock)
    assert size == DEFAULT_IMAGE_SIZE


async def test_a_second_model_refuses_what_its_entry_refuses(sandbox_factory, http) -> None:
    with registered(toy_model()):
        sb = await sandbox_factory()
        async with http.post(f"{sb.url}/v2/{TOY_SLUG}", json={"prompt": "a", "aspect_ratio": "4:3"}) as r:
            assert r.status == 400
            assert "aspect_ratio: must be one of 1:1, 16:9, 9:16" in (await r.json())["error"]
        async with http.post(f"{sb.url}/v2/{TOY_SLUG}", json={"prompt": "a", "resolution": "RESOLUTION_1024_1024"}) as r:
            assert r.status == 400 and "unknown parameter" in (await r.json())["error"]
    async with http.post(f"{sb.url}/v2/{TOY_SLUG}", json={"prompt": "a"}) as r:
        assert r.status == 404  # unregistered again
