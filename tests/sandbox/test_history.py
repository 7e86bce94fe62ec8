"""The request history as a recovering worker relies on it: what it records, when, and for how long."""

from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
import pytest

from tests.sandbox.history_helpers import HISTORY, SLUG, one, rows, submit
from tests.support.images import decode_png
from tests.support.sandbox import FakeClock


@pytest.fixture
async def slow_sb(sandbox_factory, clock: FakeClock):
    return await sandbox_factory(latency=10.0, latency_sigma=0.0, clock=clock)


async def test_rows_of_completed_failed_and_pending_requests(slow_sb, http, clock: FakeClock) -> None:
    ok_body = {"prompt": "a fox", "seed": 4242, "resolution": "RESOLUTION_768_1344"}
    ok = await submit(http, slow_sb.url, ok_body)
    bad = await submit(http, slow_sb.url, {"prompt": "[sandbox:fail] no"})
    async with http.post(f"{slow_sb.url}/v2/{SLUG}", json={"prompt": ""}) as r:
        assert r.status == 400  # refused: never in the history

    pending = {row["request_id"]: row for row in await rows(http, slow_sb.url)}
    assert set(pending) == {ok["request_id"], bad["request_id"]}
    for row in pending.values():
        assert row["model_status"] == "PENDING" and row["model_name"] == SLUG
        assert row["credits_deduction"] is None and row["generation_url"] is None
        assert row["latency_ms"] is None and row["error"] is None
    assert pending[ok["request_id"]]["request_body"] == ok_body

    clock.advance(10)
    done = {row["request_id"]: row for row in await rows(http, slow_sb.url)}
    good = done[ok["request_id"]]
    assert good["model_status"] == "COMPLETED"
    assert good["credits_deduction"] == pytest.approx(0.10)
    assert good["latency_ms"] == 10_000 and good["error"] is None
    assert good["request_body"] == ok_body
    created = datetime.fromisoformat(good["created_at"])
    updated = datetime.fromisoformat(good["updated_at"])
    assert updated - created == timedelta(seconds=10)
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(good["generation_url"]) as r:
            png = decode_png(await r.read())
    assert (png.width, png.height) == (768, 1344)

    failed = done[bad["request_id"]]
    assert failed["model_status"] == "FAILED" and failed["credits_deduction"] == 0
    assert failed["error"] and failed["generation_url"] is None
    # Summing the rows gives what the service charged.
    assert sum(r["credits_deduction"] for r in done.values()) == pytest.approx(slow_sb.stats()["charged_usd"])
    assert await one(http, slow_sb.url, ok["request_id"]) == (200, good)


async def test_body_is_kept_exactly_as_received_in_string_form(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(history_body="string", clock=clock)
    raw = '{ "seed": 100,\n  "prompt": "Zürich \\u00e9t\\u00e9" }'
    async with http.post(
        f"{sb.url}/v2/{SLUG}", data=raw.encode(), headers={"Content-Type": "application/json"}
    ) as r:
        rid = (await r.json())["request_id"]
    _, row = await one(http, sb.url, rid)
    assert row["request_body"] == raw


async def test_object_form_keeps_the_key_order_sent(sandbox, http) -> None:
    body = {"seed": 100, "style_type": "DESIGN", "prompt": "x"}
    rid = (await submit(http, sandbox.url, body))["request_id"]
    _, row = await one(http, sandbox.url, rid)
    assert list(row["request_body"]) == ["seed", "style_type", "prompt"]


async def test_http_date_timestamps(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(history_dates="http", latency=5, clock=clock)
    rid = (await submit(http, sb.url, {"prompt": "x"}))["request_id"]
    clock.advance(6)
    _, row = await one(http, sb.url, rid)
    assert row["created_at"].endswith(" GMT")
    created = parsedate_to_datetime(row["created_at"])
    updated = parsedate_to_datetime(row["updated_at"])
    assert 4 <= (updated - created).total_seconds() <= 6  # HTTP dates drop the fraction


async def test_lost_answer_is_in_the_history(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(faults="lost=1", latency=1, clock=clock)
    body = {"prompt": "the answer never arrives", "seed": 321}
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        async with http.post(f"{sb.url}/v2/{SLUG}", json=body) as r:
            await r.read()
    clock.advance(1)
    (row,) = await rows(http, sb.url)
    assert row["request_body"] == body and row["model_status"] == "COMPLETED"
    assert row["credits_deduction"] == pytest.approx(0.10)
    (job_id,) = sb.state.jobs
    assert row["request_id"] == job_id
    stats = sb.stats()
    assert stats["lost_submit_answers"] == 1 and stats["charged_usd"] == pytest.approx(0.10)


async def test_lag_before_a_record_lands(sandbox_factory, http, clock: FakeClock) -> None:
    # latency 10 s, lag 30 s, both scaled by 0.5: finished at 5 s, first visible at 15 s, final at 20 s.
    sb = await sandbox_factory(latency=10, history_lag=30, time_scale=0.5, clock=clock)
    rid = (await submit(http, sb.url, {"prompt": "late"}))["request_id"]
    clock.advance(6)  # finished, charged, readable over v2 ...
    assert (await rows(http, sb.url)) == []  # ... but not in the list yet
    status, row = await one(http, sb.url, rid)
    assert status == 200 and row["request_id"] == rid
    assert {k for k, v in row.items() if v is not None} == {"request_id"}
    assert "model_status" in row and "credits_deduction" in row

    clock.advance(9)  # 15 s: landed, still showing the state it had `lag` ago
    (listed,) = await rows(http, sb.url)
    assert listed["model_status"] == "PENDING" and listed["request_body"] == {"prompt": "late"}
    assert (await one(http, sb.url, rid))[1]["model_status"] == "PENDING"

    clock.advance(5)  # 20 s: the final record
    (listed,) = await rows(http, sb.url)
    assert listed["model_status"] == "COMPLETED" and listed["credits_deduction"] == pytest.approx(0.10)
    assert listed["generation_url"].endswith(f"/files/{rid}.png")
    assert (await one(http, sb.url, rid)) == (200, listed)


async def test_records_of_any_age_resolve(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(latency=1, retention=3600, file_retention=7 * 86400, clock=clock)
    sub = await submit(http, sb.url, {"prompt": "old"})
    clock.advance(2)
    _, fresh = await one(http, sb.url, sub["request_id"])
    clock.advance(3600)
    async with http.get(sub["status_url"]) as r:
        assert r.status == 404  # the 1-hour record is gone ...
    status, row = await one(http, sb.url, sub["request_id"])
    assert status == 200 and row["model_status"] == "COMPLETED"  # ... the history is not
    assert row["generation_url"] == fresh["generation_url"]
    async with http.get(row["generation_url"]) as r:
        assert r.status == 200  # the file outlives the record

    clock.advance(40 * 86400)  # beyond the file retention: the jobs table forgets it, the history does not
    await submit(http, sb.url, {"prompt": "pruning trigger"})
    assert sub["request_id"] not in sb.state.jobs
    status, row = await one(http, sb.url, sub["request_id"])
    assert status == 200 and row["model_status"] == "COMPLETED" and row["request_body"] == {"prompt": "old"}
    day = datetime.fromisoformat(row["created_at"]).date()
    old_rows = await rows(http, sb.url, from_date=day.isoformat(), to_date=day.isoformat())
    assert [r["request_id"] for r in old_rows] == [sub["request_id"]]
    assert sub["request_id"] not in {r["request_id"] for r in await rows(http, sb.url)}


async def test_several_outputs_list_a_request_once_per_output(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(history_outputs=3, latency=1, clock=clock)
    ok = await submit(http, sb.url, {"prompt": "three"})
    bad = await submit(http, sb.url, {"prompt": "[sandbox:fail]"})
    pending = await rows(http, sb.url)
    assert len(pending) == 2  # outputs exist only once a request completed
    clock.advance(1)
    status, page = await _page(http, sb.url)
    assert status == 200 and page["total"] == 4
    ids = [r["request_id"] for r in page["data"]]
    assert ids.count(ok["request_id"]) == 3 and ids.count(bad["request_id"]) == 1
    assert all(r["credits_deduction"] == pytest.approx(0.10) for r in page["data"] if r["request_id"] == ok["request_id"])
    distinct = {r["request_id"]: r["credits_deduction"] for r in page["data"]}
    assert sum(distinct.values()) == pytest.approx(sb.stats()["charged_usd"])
    assert (await one(http, sb.url, ok["request_id"]))[1]["request_id"] == ok["request_id"]


async def _page(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(f"{url}{HISTORY}") as r:
        return r.status, await r.json()
