"""The official SDK (segmind 1.3.0) is the reference client: it must work against the sandbox unchanged."""

import anyio
import httpx
import pytest
from segmind import SegmindClient
from segmind.exceptions import SegmindError
from segmind.v2 import InferenceFailed

from tests.support.images import decode_png

SLUG = "ideogram-txt-2-img"


def _size_of(url: str) -> tuple[int, int]:
    png = decode_png(httpx.get(url).content)
    return png.width, png.height


async def test_submit_async_wait_and_download(sandbox) -> None:
    client = SegmindClient(api_key="k", base_url=f"{sandbox.url}/v1")

    def go() -> tuple[dict, tuple[int, int]]:
        job = client.submit_async(SLUG, prompt="a lighthouse", resolution="RESOLUTION_832_1216", seed=777)
        result = job.wait(interval=0.05)
        return result, _size_of(result["output"][0])

    result, size = await anyio.to_thread.run_sync(go)
    assert result["status"] == "COMPLETED"
    assert size == (832, 1216)
    assert result["metrics"]["cost"] == pytest.approx(0.10)
    assert sandbox.stats()["completed"] == 1


async def test_run_with_default_interval(sandbox) -> None:
    client = SegmindClient(api_key="k", base_url=f"{sandbox.url}/v1")
    result = await anyio.to_thread.run_sync(lambda: client.run(SLUG, prompt="a kettle"))
    assert result["status"] == "COMPLETED"
    assert await anyio.to_thread.run_sync(_size_of, result["images"][0]) == (1024, 1024)


async def test_failed_prompt_raises_inference_failed(sandbox) -> None:
    client = SegmindClient(api_key="k", base_url=f"{sandbox.url}/v1")

    def go() -> None:
        client.submit_async(SLUG, prompt="[sandbox:fail] nope").wait(interval=0.05)

    with pytest.raises(InferenceFailed) as info:
        await anyio.to_thread.run_sync(go)
    assert info.value.detail
    assert info.value.status_body["status"] == "FAILED"
    assert sandbox.stats()["charged_usd"] == 0


async def test_no_key_is_401(sandbox, monkeypatch) -> None:
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    client = SegmindClient(api_key=None, base_url=f"{sandbox.url}/v1")
    with pytest.raises(SegmindError) as info:
        await anyio.to_thread.run_sync(lambda: client.submit_async(SLUG, prompt="x"))
    assert info.value.status == 401
    assert info.value.detail == "Missing Authorization or x-api-key in header"


async def test_bad_parameter_is_400_through_sdk(sandbox) -> None:
    client = SegmindClient(api_key="k", base_url=f"{sandbox.url}/v1")
    with pytest.raises(SegmindError) as info:
        await anyio.to_thread.run_sync(lambda: client.submit_async(SLUG, prompt="x", seed=5))
    assert info.value.status == 400 and "seed" in info.value.detail
