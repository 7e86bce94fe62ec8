"""The balance pre-flight: a 429 is waited out (its reset), not taken as "balance unknown"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from batchgen.api.client import Client, Credits, Secret
from batchgen.app import runner


def _reset_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_429_is_waited_out_and_the_balance_read(service):
    answers = iter([
        web.json_response({"error": "rate limited"}, status=429, headers={"x-rate-limit-reset-at-utc": _reset_in(7)}),
        web.json_response({"credits": 12.5, "free-credits": 0.5}),
    ])

    async def credits(request: web.Request) -> web.StreamResponse:
        return next(answers)

    service.handle("GET", "/v1/get-user-credits", credits)
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with Client(service.url, Secret("k")) as client:
        got = await runner.fetch_balance(client, sleep=sleep)
    assert isinstance(got, Credits) and got.total == 13.0
    assert len(slept) == 1 and 5.0 <= slept[0] <= 8.0  # the announced reset, not a guess


async def test_waiting_is_bounded_then_the_balance_is_unknown(service):
    service.on("GET", "/v1/get-user-credits", 429, json_body={"error": "rate limited"},
               headers={"x-rate-limit-reset-at-utc": _reset_in(100)})
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with Client(service.url, Secret("k")) as client:
        got = await runner.fetch_balance(client, sleep=sleep)
    assert isinstance(got, str) and ("429" in got or "rate" in got.lower()), got
    assert sum(slept) <= runner.BALANCE_MAX_WAIT_S
    assert len([r for r in service.requests if r.path == "/v1/get-user-credits"]) <= runner.BALANCE_TRIES


async def test_no_answer_at_all_is_not_waited_on():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with Client(f"http://127.0.0.1:{port}", Secret("k")) as client:
        got = await runner.fetch_balance(client, sleep=sleep)
    assert isinstance(got, str) and slept == []
