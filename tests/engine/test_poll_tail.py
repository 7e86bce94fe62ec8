"""A rate-limited run's tail: once nothing is left to submit, the limit's spare requests go to
denser polls of the last jobs instead of idling while they wait for their sparse rungs."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import anyio
import pytest

from batchgen.engine.config import PollPolicy
from batchgen.engine.context import Job
from batchgen.engine.poll import Poller
from batchgen.engine.schedule import BALANCED, ECONOMY, PROMPT
from tests.engine.fakes import FakeClient, item, make_run
from tests.support.sandbox import FakeClock

POLICY = PollPolicy()


def test_ladder_for_a_tail_follows_the_spare_requests() -> None:
    assert POLICY.ladder_for("all", True) is ECONOMY  # items still to submit: every poll is a submit lost
    assert POLICY.ladder_for("all", True, spare=1.0) is ECONOMY
    assert POLICY.ladder_for("all", True, spare=POLICY.tail_balanced_spare) is BALANCED
    assert POLICY.ladder_for("all", True, spare=POLICY.tail_prompt_spare) is PROMPT
    # No known limit, or polls free: as before, whatever the spare.
    assert POLICY.ladder_for("all", False, spare=100.0) is BALANCED
    assert POLICY.ladder_for("submit", True, spare=0.0) is PROMPT


def learned(median: float, n: int = 200, spread: float = 0.3) -> list[float]:
    z = NormalDist()
    return [median * math.exp(spread * z.inv_cdf((i + 0.5) / n)) for i in range(n)]


async def tail_run(tmp_path: Path, clock: FakeClock, median: float, in_flight: int):
    run = make_run(tmp_path, FakeClient(), clock, [], rpm=60.0, rpm_scope="all", concurrency=8)
    run.latencies.extend(learned(median))
    for _ in range(in_flight):
        await run.admission.resume()
    send, _recv = anyio.create_memory_object_stream[Job](math.inf)
    return run, Poller(run, to_downloader=send)


@pytest.mark.parametrize(("median", "in_flight", "expected"), [
    (30.0, 1, PROMPT),  # 30 requests to spare for one job
    (10.0, 1, BALANCED),  # 10
    (10.0, 4, ECONOMY),  # 2.5 each: the sparse ladder still pays
])
async def test_the_tail_ladder_depends_on_the_jobs_left(tmp_path: Path, median, in_flight, expected) -> None:
    clock = FakeClock()
    run, poller = await tail_run(tmp_path, clock, median, in_flight)
    assert poller.ladder() is expected
    run.admission.queue([], [item("later")])  # something still to submit: economy again
    assert poller.ladder() is ECONOMY


async def test_jobs_waiting_for_a_sparse_rung_move_earlier_when_the_tail_begins(tmp_path: Path) -> None:
    clock = FakeClock()
    run, poller = await tail_run(tmp_path, clock, 30.0, 1)
    run.admission.queue([], [item("last")])
    now = clock()
    job = Job(item=item("a"), request_id="r-1", submitted_mono=now, deadline_mono=now + 3600.0)
    poller.first_poll(job)
    poller._replan(now)  # items still to submit: the economy rung stands
    (sparse_at, _), = poller.scheduled()
    assert sparse_at - now > 30.0  # economy's first rung (85 %) is past the median

    assert run.admission._take_fresh() is not None  # the last item went out: the tail begins
    clock.advance(1.0)
    poller._replan(clock())
    (dense_at, same), = poller.scheduled()
    assert same is job
    assert clock() <= dense_at < 30.0 + now  # the prompt ladder's first rung (39 %) is before the median
    assert dense_at == pytest.approx(max(poller.due(job, clock()), clock()))
