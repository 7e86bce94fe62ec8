"""next_poll_at: when the poller asks again, from the latencies seen so far (pure function).

The schedule reads the age of a job's last poll (``last_poll_age``, which the poller sets when a
poll finds the job running) rather than counting polls, so the jobs below carry it.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from batchgen.engine.config import PollPolicy
from batchgen.engine.context import Job
from batchgen.engine.latency import estimate
from batchgen.engine.poll import BALANCED, next_poll_at

POLICY = PollPolicy()
COLD_FIRST_POLL_S = POLICY.cold_first_poll_s
# The rungs of the ladder taken as they stand: these tests are about climbing a ladder; how a
# rough estimate is improved first (the vanguard) is tested in test_schedule_wave.py.
TRUSTED = replace(POLICY, precision=1.0)
# A four-rung ladder starting at the median (the balanced ladder of earlier releases).
FROM_MEDIAN = ((0.5, 0.75, 0.9, 0.97), 0.1, 1.5)

T0 = 1000.0  # submit time on the monotonic clock


def job(polls: int = 0, last_poll_age: float = 0.0) -> Job:
    return Job(item=None, request_id="r", submitted_mono=T0, deadline_mono=T0 + 3480.0, polls=polls,
               last_poll_age=last_poll_age)


def at(j: Job, now: float, samples: list[float], default_latency: float = 21.6, ladder=BALANCED,
       policy: PollPolicy = POLICY) -> float:
    return next_poll_at(j, now, estimate(samples), ladder, policy, default_latency)


@pytest.mark.parametrize("default_latency", [0.5, 21.6, 300.0])
def test_cold_start_first_poll_is_early(default_latency):
    when = at(job(), T0, [], default_latency)
    assert T0 < when <= T0 + COLD_FIRST_POLL_S


def test_cold_start_first_poll_when_already_late_is_soon_but_not_now():
    now = T0 + 60.0  # e.g. a resumed request submitted a minute ago
    when = at(job(), now, [], 21.6)
    assert now < when <= now + COLD_FIRST_POLL_S


def test_cold_start_later_polls_back_off_and_stay_bounded():
    gaps = []
    now = T0 + 1.0
    for polls in range(1, 30):
        when = at(job(polls, last_poll_age=now - T0), now, [], 21.6)
        assert when > now
        gaps.append(when - now)
        now = when
    assert gaps[:5] == sorted(gaps[:5]) and gaps[4] > gaps[0]
    assert max(gaps) <= 30.0


def test_with_one_or_two_samples_the_schedule_is_still_cold():
    assert at(job(), T0, [20.0, 22.0], 21.6) <= T0 + COLD_FIRST_POLL_S


SAMPLES = [18.0, 19.0, 20.0, 20.5, 21.0, 21.5, 22.0, 23.0, 25.0, 30.0, 45.0]
# The same distribution, seen often enough that its own quantiles are used (fewer samples are
# smoothed by a fitted log-normal first).
SEEN = SAMPLES * 8


def test_first_poll_with_samples_is_at_the_median():
    when = at(job(0), T0 + 0.5, SEEN, 21.6, FROM_MEDIAN, TRUSTED)
    assert when == pytest.approx(T0 + statistics.median(SAMPLES))


def test_later_polls_climb_the_quantiles_then_back_off():
    times = []
    now = T0 + 0.5
    for polls in range(8):
        when = at(job(polls, last_poll_age=now - T0 if polls else 0.0), now, SEEN, 21.6, FROM_MEDIAN, TRUSTED)
        assert when > now, f"poll {polls} scheduled in the past"
        times.append(when)
        now = when
    offsets = [t - T0 for t in times]
    # Poll 0..3 sit at the 50/75/90/97 % quantiles of the samples: rising, within the observed range.
    assert offsets[:4] == sorted(offsets[:4]) and len(set(offsets[:4])) == 4
    assert min(SAMPLES) <= offsets[0] and offsets[3] <= max(SAMPLES)
    # Beyond the distribution the gaps grow (backing off) but stay bounded.
    gaps = [b - a for a, b in zip(times[3:], times[4:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]
    assert all(g <= 30.0 for g in gaps)


@pytest.mark.parametrize("policy", [POLICY, TRUSTED])
def test_never_before_now_even_when_the_quantile_has_passed(policy):
    # The job is already older than every quantile (a slow job or a resume).
    for polls in range(6):
        now = T0 + 120.0
        assert at(job(polls), now, SAMPLES, 21.6, policy=policy) > now


@pytest.mark.parametrize("last_poll_age", [0.0, 2990.0])
def test_backoff_with_extreme_poll_counts_stays_bounded(last_poll_age):
    now = T0 + 3000.0
    when = at(job(500, last_poll_age), now, SAMPLES, 21.6)
    assert now < when <= now + 30.0
    when = at(job(500, last_poll_age), now, [], 21.6)
    assert now < when <= now + 30.0


def test_cold_ladder_doubles_from_half_a_second_whatever_the_expected_latency():
    job = Job(item=None, request_id="r", submitted_mono=100.0)
    times = []
    now = 100.0
    for polls in range(5):
        job.polls = polls
        job.last_poll_age = now - 100.0
        now = next_poll_at(job, now, estimate([]), BALANCED, POLICY, 21.6)
        times.append(round(now - 100.0, 6))
    assert times == [0.5, 1.0, 2.0, 4.0, 8.0]
