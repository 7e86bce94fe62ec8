"""The history list's query: pagination, the date window, filters and sorting, and the 400s it refuses."""

from datetime import date, datetime, timedelta

import pytest

from batchgen.sandbox.history import QueryError, parse_query
from tests.sandbox.history_helpers import listing, rows, submit
from tests.support.sandbox import FakeClock

DAY = 86400.0


async def test_pagination_envelope(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(latency=1, clock=clock)
    ids = []
    for i in range(5):
        ids.append((await submit(http, sb.url, {"prompt": f"p{i}"}))["request_id"])
        clock.advance(1)
    seen = []
    for page, size in ((1, 2), (2, 2), (3, 1)):
        status, body = await listing(http, sb.url, page=page, per_page=2)
        assert status == 200
        assert (body["page"], body["per_page"], body["total"]) == (page, 2, 5)
        assert len(body["data"]) == size
        seen += [r["request_id"] for r in body["data"]]
    assert seen == ids[::-1]  # newest first by default
    status, body = await listing(http, sb.url, page=4, per_page=2)
    assert status == 200 and body["data"] == [] and body["total"] == 5
    status, body = await listing(http, sb.url)
    assert body["per_page"] == 20 and body["page"] == 1 and len(body["data"]) == 5


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"per_page": "ten"}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "1_0"}, "page"),
        ({"from_date": "2026-13-01"}, "from_date"),
        ({"to_date": "20260101"}, "to_date"),
        ({"to_date": "yesterday"}, "to_date"),
        ({"from_date": "2026-01-01", "to_date": "2026-03-01"}, "31 days"),
        ({"from_date": "2026-02-10", "to_date": "2026-02-01"}, "after"),
        ({"status": "DONE"}, "status"),
        ({"sort_by": "price"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
    ],
)
async def test_bad_queries_are_400_with_an_error(sandbox, http, params: dict, words: str) -> None:
    status, body = await listing(http, sandbox.url, **params)
    assert status == 400
    assert words in body["error"]


async def test_window_of_exactly_31_days_is_allowed(sandbox, http) -> None:
    status, _ = await listing(http, sandbox.url, from_date="2026-01-01", to_date="2026-02-01")
    assert status == 200


async def test_default_window_is_the_last_seven_days(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(latency=1, clock=clock)
    old = (await submit(http, sb.url, {"prompt": "eight days ago"}))["request_id"]
    clock.advance(DAY)
    week = (await submit(http, sb.url, {"prompt": "seven days ago"}))["request_id"]
    clock.advance(7 * DAY)
    new = (await submit(http, sb.url, {"prompt": "today"}))["request_id"]
    listed = await rows(http, sb.url)
    assert {r["request_id"] for r in listed} == {week, new}
    today = datetime.fromisoformat(next(r for r in listed if r["request_id"] == new)["created_at"]).date()
    eight_ago = (today - timedelta(days=8)).isoformat()
    assert [r["request_id"] for r in await rows(http, sb.url, to_date=eight_ago)] == [old]
    assert {r["request_id"] for r in await rows(http, sb.url, from_date=eight_ago)} == {old, week, new}


async def test_filters_and_sorting(sandbox_factory, http, clock: FakeClock) -> None:
    sb = await sandbox_factory(latency=2, clock=clock)
    a = (await submit(http, sb.url, {"prompt": "a"}))["request_id"]
    clock.advance(0.5)
    b = (await submit(http, sb.url, {"prompt": "[sandbox:fail] b"}))["request_id"]
    clock.advance(2.5)  # a and b finished
    c = (await submit(http, sb.url, {"prompt": "c"}))["request_id"]  # still pending

    def ids(found: list[dict]) -> list[str]:
        return [r["request_id"] for r in found]

    assert ids(await rows(http, sb.url, status="COMPLETED")) == [a]
    assert ids(await rows(http, sb.url, status="FAILED")) == [b]
    assert ids(await rows(http, sb.url, status="PENDING")) == [c]
    assert ids(await rows(http, sb.url, model_name="ideogram")) == [c, b, a]
    assert ids(await rows(http, sb.url, model_name="TXT-2")) == [c, b, a]  # substring, any case
    assert await rows(http, sb.url, model_name="flux") == []
    assert ids(await rows(http, sb.url, sort_order="asc")) == [a, b, c]
    assert ids(await rows(http, sb.url, sort_by="model_created", sort_order="desc")) == [c, b, a]
    by_cost = await rows(http, sb.url, sort_by="credits_deduction")
    assert ids(by_cost)[0] == a  # the only one that cost anything
    assert ids(await rows(http, sb.url, sort_by="credits_deduction", sort_order="asc"))[-1] == a
    assert ids(await rows(http, sb.url, sort_by="model_name", sort_order="asc")) == [a, b, c]


def test_parse_query_defaults() -> None:
    today = date(2026, 3, 10)
    q = parse_query({}, today)
    assert (q.page, q.per_page, q.sort_by, q.sort_order, q.status) == (1, 20, "model_created", "desc", None)
    assert (q.from_date, q.to_date) == (date(2026, 3, 3), today)
    q = parse_query({"to_date": "2026-02-01"}, today)
    assert (q.from_date, q.to_date) == (date(2026, 1, 25), date(2026, 2, 1))
    with pytest.raises(QueryError, match="31 days"):
        parse_query({"from_date": "2026-01-01"}, today)
