"""The official SDK's ``generations.history()`` and ``generations.get()`` (segmind 1.3.0) read the sandbox's history."""

import importlib

import anyio
import pytest
from segmind import SegmindClient
from segmind.exceptions import SegmindError

SLUG = "ideogram-txt-2-img"
# ``segmind.generations`` is a namespace object on the package; the module holding the URL is this one.
GENERATIONS = importlib.import_module("segmind.generations")


@pytest.fixture
async def sdk(sandbox_factory, monkeypatch):
    sb = await sandbox_factory(latency=0.02)
    monkeypatch.setattr(GENERATIONS, "REQUEST_HISTORY_URL", f"{sb.url}/inference-request/request-history")
    return sb, SegmindClient(api_key="k", base_url=f"{sb.url}/v1")


async def test_history_and_get_through_the_sdk(sdk) -> None:
    sb, client = sdk

    def go() -> tuple[str, dict, dict, dict]:
        job = client.submit_async(SLUG, prompt="a lighthouse", seed=777)
        result = job.wait(interval=0.02)
        page = client.generations.history(per_page=10, model_name="ideogram", status="COMPLETED")
        row = client.generations.get(job.request_id)
        return job.request_id, result, page, row

    request_id, result, page, row = await anyio.to_thread.run_sync(go)
    assert page["total"] == 1 and page["per_page"] == 10 and page["page"] == 1
    (listed,) = page["data"]
    assert listed == row
    assert row["request_id"] == request_id
    assert row["model_name"] == SLUG and row["model_status"] == "COMPLETED"
    assert row["credits_deduction"] == pytest.approx(result["metrics"]["cost"])
    assert row["request_body"] == {"prompt": "a lighthouse", "seed": 777}
    assert row["generation_url"] == result["output"][0]
    assert isinstance(row["latency_ms"], int) and row["error"] is None
    assert row["created_at"] and row["updated_at"]
    assert sb.stats()["history_requests"] == 2


async def test_sdk_sees_the_sandbox_errors(sdk) -> None:
    _, client = sdk
    with pytest.raises(SegmindError) as info:
        await anyio.to_thread.run_sync(lambda: client.generations.history(per_page=101))
    assert info.value.status == 400 and "per_page" in info.value.detail
    with pytest.raises(SegmindError) as info:
        await anyio.to_thread.run_sync(lambda: client.generations.get("not/a real id"))
    assert info.value.status == 404 and info.value.detail == "Request not/a real id not found"
