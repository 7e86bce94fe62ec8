"""The schedule of a first wave: scouts, recruits, the vanguard, then the ladder (pure functions)."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import pytest

from batchgen.engine.config import PollPolicy
from batchgen.engine.latency import LatencyEstimator, estimate
from batchgen.engine.schedule import BALANCED, ECONOMY, PROMPT, due_at, next_poll_at, settled

POLICY = PollPolicy()
FIRST = POLICY.cold_first_poll_s


@dataclass(eq=False)
class J:
    submitted_mono: float
    deadline_mono: float = math.inf
    last_poll_age: float = 0.0
    ready_s: float | None = None


def wave_estimate(exact=(), censored=(), n_in_flight=100, fresh=None):
    """An estimate with ``n_in_flight`` unfinished jobs submitted at 0.00, 0.01, 0.02, ..."""
    older = [i / 100 for i in range(n_in_flight)]
    return estimate(exact, censored, older=older, fresh=older if fresh is None else fresh)


def job(rank: int, **kw) -> J:
    return J(submitted_mono=rank / 100, **kw)


def due(j: J, now: float, est, ladder=BALANCED, policy=POLICY) -> float:
    return due_at(j, now, est, ladder, policy, 21.6)


def polls_while_nothing_changes(j: J, est, until: float, ladder=BALANCED, policy=POLICY) -> list[float]:
    """Ask the schedule again each time it says to; the ages at which it says "poll now"."""
    now, polled = j.submitted_mono, []
    while now < until:
        at = due(j, now, est, ladder, policy)
        if at <= now:
            polled.append(round(now - j.submitted_mono, 6))
            j.last_poll_age = now - j.submitted_mono
            at = next_poll_at(j, now, est, ladder, policy, 21.6)
        assert at > now
        now = at
    return polled


# ---- nothing finished yet: scouts probe, everyone else only looks --------------------------


def test_only_the_scouts_poll_while_nothing_has_finished():
    est = wave_estimate()
    for rank in range(POLICY.scouts):
        assert polls_while_nothing_changes(job(rank), est, until=10.0), f"scout {rank} never polled"
    for rank in (POLICY.scouts, 50, 99):
        assert polls_while_nothing_changes(job(rank), est, until=60.0) == []


def test_scouts_are_staggered_within_the_first_doubling():
    est = wave_estimate()
    firsts = [polls_while_nothing_changes(job(r), est, until=r / 100 + 2 * FIRST)[0] for r in range(POLICY.scouts)]
    assert len(set(firsts)) == POLICY.scouts
    assert all(FIRST <= f < 2 * FIRST for f in firsts) and firsts[0] == FIRST


def test_a_scout_doubles_its_gaps_up_to_the_widest():
    ages = polls_while_nothing_changes(job(0), wave_estimate(), until=200.0)
    gaps = [b - a for a, b in zip(ages, ages[1:], strict=False)]
    assert gaps[:5] == [FIRST * 2**k for k in range(5)]
    assert max(gaps) <= POLICY.max_gap_s


# ---- the first completions: recruits ------------------------------------------------------


def test_after_the_first_completion_the_oldest_jobs_poll_at_its_age():
    est = wave_estimate(exact=[1.4], censored=[1.4] * 5)
    j = job(POLICY.recruits - 1)
    assert due(j, j.submitted_mono + 1.6, est) <= j.submitted_mono + 1.6  # at 1.4 s: already due
    far = job(POLICY.recruits + 10)
    assert due(far, far.submitted_mono + 1.6, est) > far.submitted_mono + 1.6  # it waits


# ---- a rough estimate: the vanguard learns for the rest ------------------------------------

ROUGH = dict(exact=[1.0, 1.2, 1.3, 1.5, 1.6], censored=[1.6] * 15)


def test_a_rough_estimate_sends_a_vanguard_ahead_of_the_rung():
    est = wave_estimate(**ROUGH)
    assert not settled(est, POLICY)
    rung = est.quantile(BALANCED[0][0])
    lead = job(0)
    assert lead.submitted_mono + 1.0 < due(lead, lead.submitted_mono + 1.0, est) < lead.submitted_mono + rung


def test_the_rest_of_a_rough_wave_waits_for_the_rung_itself():
    est = wave_estimate(**ROUGH)
    rung = est.quantile(BALANCED[0][0])
    rest = job(99)
    assert polls_while_nothing_changes(rest, est, until=rest.submitted_mono + rung - 1e-6) == []
    assert due(rest, rest.submitted_mono + rung, est) <= rest.submitted_mono + rung


def test_a_job_already_asked_since_the_first_completion_is_not_sent_ahead_again():
    est = wave_estimate(**ROUGH)
    rung = est.quantile(BALANCED[0][0])
    asked = job(0, last_poll_age=1.2)
    now = asked.submitted_mono + 1.3
    assert due(asked, now, est) > now
    assert polls_while_nothing_changes(asked, est, until=asked.submitted_mono + rung - 1e-6) == []


def test_waiting_jobs_of_similar_age_look_again_together():
    # 40 jobs submitted within 20 ms (a burst of submits): their looks share a few instants, so
    # the poller makes one pass for many of them instead of one each.
    est = wave_estimate(**ROUGH)
    now = 1.5
    looks = {due(J(submitted_mono=0.9 + i * 0.0005), now, est) for i in range(40)}
    assert all(t > now for t in looks) and len(looks) <= 10


# ---- known well: every job at the rungs -----------------------------------------------------

KNOWN = [math.exp(math.log(2.0) + 0.35 * NormalDist().inv_cdf((i + 0.5) / 200)) for i in range(200)]


@pytest.mark.parametrize("rank", [0, 50, 99])
def test_a_known_distribution_puts_every_job_on_the_rungs(rank):
    est = wave_estimate(exact=KNOWN)
    assert settled(est, POLICY)
    j = job(rank)
    ages = polls_while_nothing_changes(j, est, until=j.submitted_mono + 5.0)
    rungs = [est.quantile(q) for q in BALANCED[0]]
    assert ages[: len(rungs)] == pytest.approx(rungs)


def test_an_early_poll_close_to_a_rung_skips_it():
    est = wave_estimate(exact=KNOWN)
    first, second = (est.quantile(q) for q in BALANCED[0][:2])
    j = job(0, last_poll_age=first - 0.01)
    assert due(j, j.submitted_mono + first, est) == pytest.approx(j.submitted_mono + second)


# ---- for every ladder and every phase: forward, and never past the deadline ------------------

PHASES = {
    "nothing known": wave_estimate(),
    "first completion": wave_estimate(exact=[1.4], censored=[1.4] * 5),
    "rough": wave_estimate(**ROUGH),
    "known": wave_estimate(exact=KNOWN),
}


@pytest.mark.parametrize("ladder", [ECONOMY, BALANCED, PROMPT], ids=["economy", "balanced", "prompt"])
@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("rank", [0, 99])
def test_polls_move_forward_and_never_past_the_deadline(ladder, phase, rank):
    est = PHASES[phase]
    deadline = 7.0
    j = job(rank, deadline_mono=deadline)
    now = j.submitted_mono
    for _ in range(200):
        at = next_poll_at(j, now, est, ladder, POLICY, 21.6)
        assert at <= deadline
        if now >= deadline:
            break
        assert at > now
        if due(j, at, est, ladder) <= at:  # a poll that finds the job still running
            j.last_poll_age = at - j.submitted_mono
        now = at
    assert now >= deadline, "the schedule stalled before the deadline"


# ---- a whole first wave, driven through the estimator ---------------------------------------


def test_a_first_wave_polls_only_its_scouts_until_something_finishes():
    latencies = [2.0 * math.exp(0.35 * NormalDist().inv_cdf((i + 0.5) / 120)) for i in range(120)]
    latencies = latencies[::2] + latencies[1::2]  # not in submit order
    jobs = [J(submitted_mono=i * 0.001) for i in range(120)]
    polled_before_any: set[int] = set()
    est = LatencyEstimator([], window=256, precise=lambda e: settled(e, POLICY))
    heap: list[tuple[float, int]] = []
    for i, j in enumerate(jobs):
        est.track(j)
        heap.append((next_poll_at(j, j.submitted_mono, est.estimate(j.submitted_mono, lambda: jobs), BALANCED,
                                  POLICY, 21.6), i))
    heapq.heapify(heap)
    while heap:
        now, i = heapq.heappop(heap)
        j = jobs[i]
        e = est.estimate(now, lambda: (jobs[k] for _, k in heap))
        at = due(j, now, e)
        if at > now:
            heapq.heappush(heap, (at, i))
            continue
        if e.n_exact == 0:
            polled_before_any.add(i)
        age = now - j.submitted_mono
        if latencies[i] <= age:
            j.ready_s = latencies[i]
        else:
            j.last_poll_age = age
            heapq.heappush(heap, (next_poll_at(j, now, est.estimate(now, lambda: jobs), BALANCED, POLICY, 21.6), i))
        est.changed()
    assert all(j.ready_s is not None for j in jobs)  # every job was asked after it finished
    assert len(polled_before_any) <= POLICY.scouts
    assert polled_before_any <= set(range(POLICY.scouts + 2))  # the oldest (a rank shifts while one is out)


def test_a_smaller_precision_is_a_larger_vanguard():
    est = wave_estimate(**ROUGH)
    strict = replace(POLICY, precision=0.02)
    loose = replace(POLICY, precision=0.5)
    rung = est.quantile(BALANCED[0][0])

    def ahead(policy: PollPolicy) -> int:
        return sum(due(job(r), job(r).submitted_mono + 1.0, est, policy=policy) < job(r).submitted_mono + rung
                   for r in range(100))

    assert ahead(loose) == 0 < ahead(strict)


def test_when_polls_are_free_a_first_wave_learns_eagerly():
    free = POLICY.for_scope("submit")
    assert POLICY.for_scope("all") is POLICY
    assert free.scouts > POLICY.scouts and free.recruits > POLICY.recruits and free.precision < POLICY.precision
    est = wave_estimate()
    rank = POLICY.scouts  # the first job that is not a scout when polls count
    assert polls_while_nothing_changes(job(rank), est, until=5.0, policy=free)
    assert polls_while_nothing_changes(job(rank), est, until=5.0) == []
