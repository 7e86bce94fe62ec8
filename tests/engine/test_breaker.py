"""The circuit breaker: an unreachable service ends the run in about a minute; a shorter outage is ridden out.

A connect-level failure (refused, DNS, TLS) is ``Retryable(sent=False)`` from the client. Whole
runs here use a clock that every request moves on by a second, so "a minute" is sixty requests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.api.outcomes import (
    Accepted,
    ItemFatal,
    JobResult,
    JobStatus,
    Outcome,
    RateLimited,
    Retryable,
)
from batchgen.engine.breaker import Breaker, host_of
from batchgen.sandbox.images import render_png
from batchgen.store.ledger import readable_events
from tests.engine.fakes import Clock, ClockedClient, item, run_clocked
from tests.support.sandbox import FakeClock

REFUSED = Retryable("POST /v2/test-model: cannot connect (Connection refused)", sent=False)
URL = "https://cdn.example/x.png"
PNG = render_png("a lighthouse", 1, 64, 48)
WINDOW = 60.0


def breaker(clock: FakeClock) -> tuple[Breaker, list[str]]:
    tripped: list[str] = []
    return Breaker(WINDOW, clock, "api.example.test", tripped.append), tripped


# ---- the breaker alone --------------------------------------------------------------------------


def test_connect_failures_for_the_whole_window_trip_it_once(clock: FakeClock) -> None:
    b, tripped = breaker(clock)
    for _ in range(60):  # the first at 0 s, the last at 59 s
        b.heard(REFUSED)
        clock.advance(1.0)
    assert tripped == []
    b.heard(REFUSED)
    b.heard(REFUSED)
    assert len(tripped) == 1
    line = tripped[0]
    assert line.startswith("cannot reach api.example.test: no request got through for 60 s")
    assert "Connection refused" in line and "nothing was billed" in line and "\n" not in line


@pytest.mark.parametrize(
    "answer",
    [
        Accepted("r-1"),
        Retryable("HTTP 503", status=503),
        Retryable("connection dropped"),  # it connected: the service is there
        RateLimited(1.0, "HTTP 429"),
        ItemFatal("HTTP 400", 400),
    ],
    ids=["accepted", "5xx", "dropped", "429", "400"],
)
def test_any_answer_closes_it_again(clock: FakeClock, answer: Outcome) -> None:
    b, tripped = breaker(clock)
    b.heard(REFUSED)
    clock.advance(50.0)
    b.heard(answer)
    clock.advance(50.0)
    b.heard(REFUSED)  # down again, but only since now
    clock.advance(50.0)
    b.heard(REFUSED)
    assert tripped == [] and b.down_since is not None


def test_the_host_comes_from_the_base_url() -> None:
    assert host_of("https://api.segmind.com") == "api.segmind.com"
    assert host_of("http://127.0.0.1:8765/") == "127.0.0.1:8765"
    assert host_of(None) == "the service"


# ---- whole runs -----------------------------------------------------------------------------


def ledger_kinds(folder: Path) -> list[str]:
    return [ev["event"] for ev in readable_events(folder / "ledger.jsonl")]


async def test_a_service_down_for_good_ends_the_run_with_3_naming_the_host(tmp_path: Path) -> None:
    client = ClockedClient(Clock(), submit=[REFUSED])
    outcome = await run_clocked(tmp_path, client, [item(i) for i in range(20)])
    assert outcome.exit_code == 3
    assert outcome.reason is not None and outcome.reason.startswith("cannot reach api.example.test:")
    assert "nothing was billed since it went down" in outcome.reason
    assert client.count("submit") <= WINDOW + 2  # one a second for the window, not six tries per item
    assert "failed" not in ledger_kinds(tmp_path)  # nothing was tried for good: the next run goes on
    assert outcome.counts["pending"] == 20 and outcome.counts["possible_double_charges"] == 0


async def test_polls_that_cannot_connect_trip_it_too(tmp_path: Path) -> None:
    client = ClockedClient(Clock(), submit=[Accepted("r-1")], status=[REFUSED])
    outcome = await run_clocked(tmp_path, client, [item(1)])
    assert outcome.exit_code == 3 and "cannot reach api.example.test" in (outcome.reason or "")
    assert client.count("status") <= WINDOW + 2
    assert outcome.counts["in_flight"] == 1  # its request_id is in the ledger: the next run polls it


async def test_an_outage_shorter_than_the_window_is_ridden_out(tmp_path: Path) -> None:
    client = ClockedClient(
        Clock(),
        submit=[REFUSED] * 40 + [Accepted(f"r-{i}") for i in range(3)],
        status=[REFUSED] * 10 + [JobStatus("COMPLETED")],
        result=[JobResult("COMPLETED", URL, cost_usd=0.5, inference_time=1.0)],
        images={URL: PNG},
    )
    outcome = await run_clocked(tmp_path, client, [item(i) for i in range(3)])
    assert (outcome.exit_code, outcome.reason) == (0, None)
    assert outcome.counts["downloaded"] == 3 and outcome.counts["failed"] == 0
    assert "failed" not in ledger_kinds(tmp_path)


async def test_connect_failures_spend_no_submit_retries(tmp_path: Path) -> None:
    # Ten refusals in a row are well over submit_retries (5), yet the item is not given up on.
    client = ClockedClient(Clock(), submit=[REFUSED] * 10 + [Accepted("r-1")], status=[JobStatus("COMPLETED")],
                           result=[JobResult("COMPLETED", URL, cost_usd=0.5, inference_time=1.0)], images={URL: PNG})
    outcome = await run_clocked(tmp_path, client, [item(1)])
    assert outcome.exit_code == 0 and client.count("submit") == 11
    assert outcome.counts["retries"] == 10 and outcome.counts["possible_double_charges"] == 0
