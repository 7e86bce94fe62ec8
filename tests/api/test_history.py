"""The request-history client over MockTransport: every envelope, body and timestamp form the
service may use, rows not landed yet, one row per output, pagination, the 31-day windows, a
history that is not there, 429s and 5xx waited out, and the key going to configured hosts only."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from batchgen.api.client import Client, Secret
from batchgen.api.history import HISTORY_URL, HistoryClient, merge_rows, parse_time, windows
from batchgen.api.mock_transport import MockTransport
from batchgen.api.outcomes import (
    HistoryNotFound,
    HistoryPage,
    HistoryRow,
    HistoryRows,
    HistoryUnavailable,
    ItemFatal,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.api.protocol import API_KEY_HEADER, RATE_RESET_HEADER
from batchgen.api.transport import Request, Response
from batchgen.sandbox.history import QueryError, parse_query

BASE = "https://api.segmind.com"
KEY = "SG_history_key_0123456789abcdef"
LIST = "/inference-request/request-history"
BODY = {"prompt": "a red fox", "seed": 4242, "resolution": "RESOLUTION_1024_1024"}
WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def row(rid: str, status: str | None = "COMPLETED", **over: Any) -> dict[str, Any]:
    base = {
        "request_id": rid,
        "model_name": "ideogram-txt-2-img",
        "model_status": status,
        "credits_deduction": 0.1 if status == "COMPLETED" else None,
        "request_body": BODY,
        "generation_url": f"https://cdn.example/{rid}.png" if status == "COMPLETED" else None,
        "latency_ms": 21600,
        "error": None,
        "created_at": "2026-03-04T05:06:07.000Z",
        "updated_at": "2026-03-04T05:06:29.000Z",
    }
    return base | over


def history(handler: Callable[[Request], Response], url: str = HISTORY_URL, **kw: Any) -> tuple[HistoryClient, MockTransport]:
    transport = MockTransport(handler)
    client = Client(BASE, Secret(KEY), transport=transport)
    return HistoryClient.beside(client, url, **kw), transport


def query(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def page_of(rows: list[dict[str, Any]]) -> Callable[[Request], Response]:
    return lambda req: Response.with_json(200, {"data": rows, "page": 1, "per_page": 100, "total": len(rows)})


# ---- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "envelope",
    [
        lambda rows: rows,
        lambda rows: {"data": rows, "page": 1, "per_page": 100, "total": len(rows)},
        lambda rows: {"rows": rows},
        lambda rows: {"items": rows, "count": len(rows)},
        lambda rows: {"results": rows},
        lambda rows: {"data": {"rows": rows, "total": len(rows)}},
    ],
    ids=["bare-list", "data", "rows", "items", "results", "nested"],
)
async def test_every_envelope_gives_the_same_rows(envelope) -> None:
    served = [row("r1"), row("r2", "FAILED", error="blocked", credits_deduction=0)]
    h, _ = history(lambda req: Response.with_json(200, envelope(served)))
    page = await h.list_page()
    assert isinstance(page, HistoryPage)
    assert [(r.request_id, r.status, r.cost_usd) for r in page.rows] == [("r1", "COMPLETED", 0.1), ("r2", "FAILED", 0.0)]
    assert page.rows[0].billed and not page.rows[1].billed and page.rows[1].error == "blocked"
    assert page.rows[0].generation_url == "https://cdn.example/r1.png"


@pytest.mark.parametrize("form", ["object", "json-string"])
async def test_request_body_as_object_or_json_string(form: str) -> None:
    body = BODY if form == "object" else json.dumps(BODY)
    h, _ = history(page_of([row("r1", request_body=body)]))
    page = await h.list_page()
    assert page.rows[0].request_body == BODY


async def test_an_unreadable_request_body_is_none_not_an_error() -> None:
    h, _ = history(page_of([row("r1", request_body="{not json"), row("r2", request_body=[1, 2])]))
    page = await h.list_page()
    assert [r.request_body for r in page.rows] == [None, None]


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-03-04T05:06:07Z",
        "2026-03-04T05:06:07.000Z",
        "2026-03-04T06:06:07+01:00",
        "2026-03-04T05:06:07",  # naive: UTC
        format_datetime(WHEN, usegmt=True),  # HTTP date
        WHEN.timestamp(),
        int(WHEN.timestamp() * 1000),
        str(int(WHEN.timestamp())),
    ],
)
async def test_timestamps_as_iso_http_date_or_epoch(stamp: Any) -> None:
    h, _ = history(page_of([row("r1", created_at=stamp)]))
    page = await h.list_page()
    assert page.rows[0].created == WHEN


def test_unreadable_timestamps_are_none() -> None:
    assert [parse_time(v) for v in ("", "yesterday", None, True, [1])] == [None] * 5


async def test_a_row_not_landed_yet_has_every_field_null() -> None:
    blank = dict.fromkeys(row("r1")) | {"request_id": "r1"}
    h, _ = history(lambda req: Response.with_json(200, blank))
    got = await h.get("r1")
    assert got == HistoryRow("r1") and not got.landed and not got.billed


async def test_a_lookup_whose_row_omits_the_id_takes_the_id_asked_for() -> None:
    h, _ = history(lambda req: Response.with_json(200, {"data": row(None, "PENDING")}))  # type: ignore[arg-type]
    got = await h.get("r9")
    assert isinstance(got, HistoryRow) and (got.request_id, got.status, got.cost_usd) == ("r9", "PENDING", None)


async def test_rows_without_an_id_are_skipped() -> None:
    h, _ = history(page_of([{"model_status": "COMPLETED"}, "junk", row("r1")]))
    page = await h.list_page()
    assert [r.request_id for r in page.rows] == ["r1"]


async def test_one_row_per_output_is_one_request() -> None:
    served = [row("r1"), row("r1"), row("r1"), row("r2", "PENDING")]
    h, _ = history(page_of(served))
    got = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5))
    assert isinstance(got, HistoryRows)
    assert [r.request_id for r in got.rows] == ["r1", "r2"]
    assert sum(r.cost_usd or 0 for r in got.rows) == pytest.approx(0.1)


def test_the_most_advanced_row_of_a_request_wins() -> None:
    seen = [HistoryRow("r1"), HistoryRow("r1", "PENDING"), HistoryRow("r1", "COMPLETED", cost_usd=0.1), HistoryRow("r1")]
    assert merge_rows(seen) == [HistoryRow("r1", "COMPLETED", cost_usd=0.1)]


async def test_a_lookup_answered_with_one_row_per_output() -> None:
    h, _ = history(lambda req: Response.with_json(200, [row("r1"), row("r1")]))
    got = await h.get("r1")
    assert isinstance(got, HistoryRow) and got.billed and got.cost_usd == pytest.approx(0.1)


# ---- walking a time range --------------------------------------------------------------------


def paged(rows: list[dict[str, Any]], *, total: bool = True, bare: bool = False) -> Callable[[Request], Response]:
    def answer(req: Request) -> Response:
        q = query(req)
        page, per = int(q["page"]), int(q["per_page"])
        chunk = rows[(page - 1) * per : page * per]
        if bare:
            return Response.with_json(200, chunk)
        return Response.with_json(200, {"data": chunk, **({"total": len(rows)} if total else {})})

    return answer


@pytest.mark.parametrize("form", ["total", "no-total", "bare-list"])
async def test_pagination_reads_every_page_and_no_more(form: str) -> None:
    served = [row(f"r{i:03d}", created_at=(WHEN + timedelta(seconds=i)).isoformat()) for i in range(250)]
    h, transport = history(paged(served, total=form == "total", bare=form == "bare-list"))
    got = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5))
    assert isinstance(got, HistoryRows)
    assert [r.request_id for r in got.rows] == [f"r{i:03d}" for i in range(250)]
    assert [query(r)["page"] for r in transport.requests] == ["1", "2", "3"]
    assert {query(r)["per_page"] for r in transport.requests} == {"100"}
    assert {(query(r)["sort_by"], query(r)["sort_order"]) for r in transport.requests} == {("model_created", "asc")}


async def test_a_server_that_repeats_its_last_page_does_not_loop() -> None:
    served = [row(f"r{i}") for i in range(100)]
    h, transport = history(lambda req: Response.with_json(200, served))  # page 2, 3, ... the same rows
    got = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5))
    assert isinstance(got, HistoryRows) and len(got.rows) == 100
    assert len(transport.requests) == 2


def test_windows_cover_the_range_back_to_back() -> None:
    cut = windows(date(2026, 1, 1), date(2026, 4, 15))
    assert cut[0][0] == date(2026, 1, 1) and cut[-1][1] == date(2026, 4, 15)
    for (_, end), (start, _) in zip(cut, cut[1:], strict=False):
        assert start == end + timedelta(days=1)
    assert all((end - start).days <= 30 for start, end in cut)
    assert windows(date(2026, 1, 1), date(2026, 1, 1)) == [(date(2026, 1, 1), date(2026, 1, 1))]


async def test_a_long_range_is_asked_in_windows_the_service_accepts() -> None:
    asked: list[tuple[str, str]] = []

    def answer(req: Request) -> Response:
        q = query(req)
        asked.append((q["from_date"], q["to_date"]))
        try:  # the emulator's own check of the 31-day cap
            parse_query(q, date(2026, 12, 31))
        except QueryError as e:
            return Response.with_json(400, {"error": str(e)})
        return Response.with_json(200, {"data": [row(f"r-{q['from_date']}")], "total": 1})

    h, _ = history(answer)
    got = await h.rows_between(date(2026, 1, 1), date(2026, 6, 30), model_name="ideogram")
    assert isinstance(got, HistoryRows) and len(got.rows) == len(asked) == 6
    assert asked[0][0] == "2026-01-01" and asked[-1][1] == "2026-06-30"
    assert got.pages == 6


async def test_the_model_filter_and_dates_are_sent() -> None:
    h, transport = history(page_of([]))
    await h.list_page(from_date=date(2026, 3, 1), to_date=date(2026, 3, 31), model_name="ideogram-txt-2-img",
                      status="COMPLETED", per_page=50, page=2)
    q = query(transport.requests[0])
    assert q == {"page": "2", "per_page": "50", "from_date": "2026-03-01", "to_date": "2026-03-31",
                 "model_name": "ideogram-txt-2-img", "status": "COMPLETED", "sort_by": "model_created",
                 "sort_order": "asc"}
    assert transport.requests[0].url.startswith(HISTORY_URL + LIST + "?")


# ---- a history that cannot answer ------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 405, 302])
async def test_no_list_endpoint_means_the_history_is_unavailable(status: int) -> None:
    headers = {"Location": "https://elsewhere.example/"} if status == 302 else None
    h, transport = history(lambda req: Response(status, headers or {}, b"<html><title>Not Found</title></html>"))
    got = await h.list_page()
    assert isinstance(got, HistoryUnavailable) and got.status == status
    walked = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5))
    assert isinstance(walked, HistoryUnavailable)
    assert len(transport.requests) == 2  # asked once each, never retried nor redirected


async def test_a_list_answer_without_rows_is_unavailable() -> None:
    h, _ = history(lambda req: Response(200, {"Content-Type": "text/html"}, b"<html>app shell</html>"))
    assert isinstance(await h.list_page(), HistoryUnavailable)


async def test_lookup_404_is_not_found_and_405_unavailable() -> None:
    h, _ = history(lambda req: Response.with_json(404, {"error": "Request r1 not found"}))
    got = await h.get("r1")
    assert isinstance(got, HistoryNotFound) and got.request_id == "r1"
    h, _ = history(lambda req: Response(405, {}, b"<html>Method Not Allowed</html>"))
    assert isinstance(await h.get("r1"), HistoryUnavailable)


async def test_an_id_that_could_change_the_path_is_never_sent() -> None:
    h, transport = history(page_of([]))
    for bad in ("../credits", "..", "a/b", "r1?x=1", ""):
        assert isinstance(await h.get(bad), HistoryNotFound)
    assert transport.requests == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, RunFatal), (403, RunFatal), (400, ItemFatal), (500, Retryable), (503, Retryable), (429, RateLimited)],
)
async def test_other_answers_map_to_their_outcome(status: int, kind: type) -> None:
    h, _ = history(lambda req: Response.with_json(status, {"error": f"nope {KEY}"}))
    got = await h.list_page()
    assert isinstance(got, kind)
    assert KEY not in repr(got) and KEY not in getattr(got, "message", "")


async def test_429_is_waited_out_by_its_reset_then_the_walk_goes_on() -> None:
    reset = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    answers = [
        Response.with_json(429, {"error": "Rate limit exceeded"}, {"Retry-After": reset}),
        Response.with_json(429, {"error": "Rate limit exceeded"}, {RATE_RESET_HEADER: "1"}),  # in the past: 0
        Response.with_json(503, {"error": "busy"}),
    ]
    served = [row("r1")]

    def answer(req: Request) -> Response:
        return answers.pop(0) if answers else Response.with_json(200, served)

    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    h, transport = history(answer)
    got = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5), sleep=sleep)
    assert isinstance(got, HistoryRows) and [r.request_id for r in got.rows] == ["r1"]
    assert len(transport.requests) == 4
    assert 1.5 < slept[0] <= 3.5 and slept[1] == pytest.approx(0.05) and slept[2] == pytest.approx(1.0)


async def test_a_history_that_keeps_failing_gives_up_in_bounded_tries() -> None:
    async def sleep(s: float) -> None:
        pass

    h, transport = history(lambda req: Response.with_json(503, {"error": "busy"}))
    got = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5), sleep=sleep)
    assert isinstance(got, Retryable) and got.status == 503
    assert 2 <= len(transport.requests) <= 10
    h, transport = history(lambda req: Response.with_json(429, {"error": "slow down"}))
    got = await h.rows_between(date(2026, 3, 1), date(2026, 3, 5), sleep=sleep)
    assert isinstance(got, RateLimited) and len(transport.requests) <= 10


async def test_acquire_runs_before_every_call() -> None:
    log: list[str] = []

    async def acquire() -> None:
        log.append("acquire")

    def answer(req: Request) -> Response:
        log.append("send")
        return Response.with_json(200, row("r1")) if "/request-history/" in req.url else Response.with_json(200, [])

    h, _ = history(answer, acquire=acquire)
    await h.list_page()
    await h.get("r1")
    assert log == ["acquire", "send", "acquire", "send"]


# ---- the key ---------------------------------------------------------------------------------


async def test_the_key_goes_to_the_configured_hosts_only() -> None:
    other = "https://history.example:8443"

    def answer(req: Request) -> Response:
        if req.url.startswith("https://cdn.example/"):
            return Response(200, {"Content-Type": "image/png"}, b"png")
        if "/request-history/" in req.url:
            return Response(302, {"Location": "https://evil.example/steal"}, b"")
        return Response.with_json(200, {"data": [row("r1")], "total": 1})

    transport = MockTransport(answer)
    client = Client(BASE, Secret(KEY), transport=transport)
    for url in (HISTORY_URL, other, BASE):
        h = HistoryClient.beside(client, url + "/")
        page = await h.rows_between(date(2026, 3, 1), date(2026, 3, 2))
        assert isinstance(page, HistoryRows)
        assert isinstance(await h.get("r1"), HistoryUnavailable)  # the redirect is an answer, not followed
        async with client.download(page.rows[0].generation_url) as resp:  # the output file needs no key
            assert await resp.read() == b"png"
        await client.credits()
    keyed = {urlsplit(r.url)._replace(path="", query="").geturl() for r in transport.requests
             if API_KEY_HEADER in {k.lower() for k in r.headers}}
    assert keyed == {HISTORY_URL, other, BASE}
    for r in transport.requests:
        if r.url.startswith("https://cdn.example/"):
            assert KEY not in json.dumps(dict(r.headers)) and r.max_redirects > 0
        else:
            assert r.max_redirects == 0
    assert not any("evil.example" in r.url for r in transport.requests)
    assert KEY not in repr(HistoryClient.beside(client, other)) and KEY not in repr(client.at(other))


def test_history_by_default_on_segminds_history_host() -> None:
    from batchgen.app.runner import resolve_history_url

    assert HISTORY_URL == "https://api.spotprod.segmind.com"
    assert resolve_history_url(None, None) == HISTORY_URL
    assert resolve_history_url(None, "http://127.0.0.1:8765") == "http://127.0.0.1:8765"  # one emulator serves both
    assert resolve_history_url("https://h.example/", "http://127.0.0.1:8765") == "https://h.example"
    assert resolve_history_url(None, None, sandbox_url="http://127.0.0.1:9") == "http://127.0.0.1:9"
