"""The latency estimate: finished jobs and jobs seen still running (censored), as the schedule reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import pytest

from batchgen.engine.latency import LatencyEstimator, estimate

MU, SIGMA = math.log(2.0), 0.35  # a log-normal with median 2 s


def lognormal_sample(n: int, mu: float = MU, sigma: float = SIGMA) -> list[float]:
    """n latencies at evenly spaced quantiles: a sample with no randomness in it."""
    return [math.exp(mu + sigma * NormalDist().inv_cdf((i + 0.5) / n)) for i in range(n)]


def true_quantile(q: float) -> float:
    return math.exp(MU + SIGMA * NormalDist().inv_cdf(q))


def test_finished_jobs_only_give_their_own_quantiles():
    samples = [float(x) for x in range(1, 101)]  # 1 .. 100 s, all finished
    est = estimate(samples)
    assert est.quantile(0.5) == 50.0 and est.quantile(0.9) == 90.0
    assert est.error(0.5) == 0.0  # nothing left to learn: the schedule waits for no one


def test_jobs_still_running_push_the_quantiles_later():
    # The first wave's view: the three fastest have finished, seven are still running at 3.5 s.
    fast = [1.0, 2.0, 3.0]
    ignoring = estimate(fast)
    with_running = estimate(fast, censored=[3.5] * 7)
    assert ignoring.quantile(0.5) < 3.0  # what learning from completions alone concluded
    assert with_running.quantile(0.5) > 3.5  # most of the wave is slower than anything seen yet


def test_a_job_never_polled_says_nothing():
    fast = [1.0, 2.0, 3.0]
    assert estimate(fast, censored=[0.0] * 50).quantile(0.5) == estimate(fast).quantile(0.5)


def test_a_censored_wave_recovers_the_distribution_it_came_from():
    # 300 jobs, all asked at 2.2 s: those done report their exact time, the rest are still running.
    latencies = lognormal_sample(300)
    cut = 2.2
    est = estimate([x for x in latencies if x <= cut], censored=[cut for x in latencies if x > cut])
    for q in (0.75, 0.9, 0.97):  # past the oldest age seen: the fitted log-normal answers
        assert est.quantile(q) == pytest.approx(true_quantile(q), rel=0.05)
    assert est.fit is not None and est.fit[1] == pytest.approx(SIGMA, rel=0.1)


def test_the_error_shrinks_as_more_jobs_are_seen():
    few = estimate(lognormal_sample(8))
    many = estimate(lognormal_sample(60))
    assert 0 < many.error(0.75) < few.error(0.75) < math.inf
    assert estimate([]).error(0.75) == math.inf


def test_the_spread_prior_holds_until_the_data_says_otherwise():
    one = estimate([2.0], censored=[2.5] * 5, spread_prior=0.35)
    assert one.fit is not None and one.fit[1] == pytest.approx(0.35, rel=0.3)
    narrow = lognormal_sample(200, sigma=0.15)  # enough jobs: their own spread wins
    est = estimate([x for x in narrow if x <= 2.0], censored=[2.0 for x in narrow if x > 2.0], spread_prior=0.35)
    assert est.fit is not None and est.fit[1] == pytest.approx(0.15, rel=0.15)


def test_zero_latencies_do_not_break_the_fit():
    est = estimate([0.0, 0.0, 0.001], censored=[0.002])
    assert 0 < est.quantile(0.5) < 0.01 and math.isfinite(est.error(0.5))


@dataclass(eq=False)
class J:
    submitted_mono: float
    last_poll_age: float = 0.0
    ready_s: float | None = None


def test_estimator_reads_its_jobs_when_it_rebuilds():
    est = LatencyEstimator([], window=16)
    jobs = [J(submitted_mono=float(i)) for i in range(4)]
    for j in jobs:
        est.track(j)
    jobs[0].ready_s = 1.5
    jobs[1].last_poll_age = 2.0
    e = est.estimate(10.0, lambda: jobs[1:])
    assert e.n_exact == 1 and e.times == (1.5,)
    assert e.older == (1.0, 2.0, 3.0)  # unfinished jobs in flight, by submit time
    assert e.fresh == (2.0, 3.0)  # ... of which not asked since the first completion


def test_estimator_keeps_its_estimate_until_something_changes():
    jobs = [J(submitted_mono=0.0, ready_s=1.0), J(submitted_mono=0.0, ready_s=2.0)]
    est = LatencyEstimator([3.0], window=16)
    for j in jobs:
        est.track(j)
    first = est.estimate(1.0, lambda: [])
    assert est.estimate(2.0, lambda: []) is first  # no change since: no rebuild
    jobs[0].ready_s = 0.5
    est.changed()
    assert est.estimate(3.0, lambda: []).times[0] == 0.5


def test_estimator_window_forgets_the_oldest_first():
    est = LatencyEstimator([100.0, 100.0], window=16)
    for i in range(16):
        est.track(J(submitted_mono=float(i), ready_s=1.0))
    e = est.estimate(0.0, lambda: [])
    assert e.n_exact == 16 and e.times == (1.0,)  # the seeds (100 s) have left the window
    assert e.quantile(0.99) < 2.0


def test_a_job_is_tracked_once():
    est = LatencyEstimator([], window=16)
    j = J(submitted_mono=0.0, ready_s=1.0)
    est.track(j)
    est.track(j)
    assert est.estimate(0.0, lambda: []).n_exact == 1
