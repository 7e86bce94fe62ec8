"""What the completion times seen so far say about the next ones, censoring included.

A job still running when last asked is not missing data: it took *longer* than its age at that
poll. Ignoring it is what made the first wave of a run poll too often: the first completions are
the fastest ones, so quantiles learned from them alone sit far too early while most of the wave
is still running. Two estimates use every job, finished or not:

- Kaplan–Meier, which makes no assumption about the shape and is exact where enough jobs have
  been seen (a resumed run, or any run past its first wave);
- a log-normal fitted by maximum likelihood with right-censoring, with a weak prior on its
  spread, which reaches past the oldest job seen (the rungs a first wave has not reached yet)
  and says how sure it is (the covariance of its two parameters).

``LatencyEstimator`` keeps the jobs of the last ``window`` submissions (a cohort by submit time,
so long jobs are neither over- nor under-counted) and rebuilds its ``Estimate`` — a frozen value
the pure schedule in schedule.py reads — only when enough has changed.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

__all__ = ["Estimate", "LatencyEstimator", "Tracked", "estimate"]

_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)
_FLOOR_S = 1e-3  # a zero-latency service still reports a positive time; logs need one
_KM_RICH = 64  # exact samples beyond which Kaplan–Meier is preferred where it reaches
_KM_MARGIN = 0.02  # ... and reaches this far past the quantile asked for
_SPREAD_PRIOR_SD = 0.3
REBUILD_SHARE = 0.005  # of log(sigma): the prior moves sigma by about a third either way


class Tracked(Protocol):
    """What the estimator reads from a job in flight (``context.Job`` is one)."""

    submitted_mono: float
    last_poll_age: float
    ready_s: float | None


@dataclass(frozen=True, slots=True)
class Estimate:
    """The latency distribution as known at one moment, and who is in flight (submit times).

    ``older`` lists the submit times of every unfinished job in flight, ``fresh`` those among them
    not asked about since the first completion; the schedule uses their order to pick the few
    jobs whose polls teach the rest.
    """

    times: tuple[float, ...] = ()  # Kaplan–Meier event times, ascending
    cdf: tuple[float, ...] = ()  # share finished by each of those times
    n_exact: int = 0
    informative: int = 0  # exact samples plus jobs seen running past the first completion
    fit: tuple[float, float] | None = None  # log-normal (mu, sigma) of the latency
    cov: tuple[float, float, float] = (0.0, 0.0, 0.0)  # var mu, cov(mu, log sigma), var log sigma
    older: tuple[float, ...] = ()
    fresh: tuple[float, ...] = ()

    def quantile(self, q: float) -> float:
        """The q-quantile: Kaplan–Meier where it is well supported, the fitted log-normal beyond."""
        cdf = self.cdf
        if cdf and cdf[-1] >= min(1.0, q + _KM_MARGIN) and (self.n_exact >= _KM_RICH or self.fit is None):
            return self.times[bisect.bisect_left(cdf, q - 1e-12)]
        if self.fit is None:
            return self.times[-1] if self.times else math.inf
        mu, sigma = self.fit
        return math.exp(mu + sigma * _NORMAL.inv_cdf(q))

    def error(self, q: float) -> float:
        """Standard error of log(quantile q): 0.05 means the time is known to about 5 %."""
        if self.fit is None:  # nothing finished yet, or so many that only Kaplan–Meier is used
            return 0.0 if self.n_exact else math.inf
        z, sigma = _NORMAL.inv_cdf(q), self.fit[1]
        v_mu, c, v_s = self.cov
        return math.sqrt(max(0.0, v_mu + 2.0 * z * sigma * c + (z * sigma) ** 2 * v_s))

    def rank(self, submitted: float, among: tuple[float, ...]) -> int:
        """How many jobs of ``among`` were submitted before this one."""
        return bisect.bisect_left(among, submitted)


def estimate(
    exact: Iterable[float],
    censored: Iterable[float] = (),
    *,
    spread_prior: float = 0.35,
    older: Iterable[float] = (),
    fresh: Iterable[float] = (),
    start: tuple[float, float] | None = None,
) -> Estimate:
    """The estimate from exact latencies and ages at which jobs were still running (pure)."""
    done = sorted(max(_FLOOR_S, x) for x in exact)
    alive = sorted(c for c in censored if c > 0)
    times, cdf = _kaplan_meier(done, alive)
    informative = 0
    fit, cov = None, (0.0, 0.0, 0.0)
    if done:
        informative = len(done) + len(alive) - bisect.bisect_left(alive, done[0])
        if len(done) < _KM_RICH or cdf[-1] < 1.0:
            fit, cov = _fit_lognormal([math.log(x) for x in done], [math.log(c) for c in alive], spread_prior, start)
    return Estimate(tuple(times), tuple(cdf), len(done), informative, fit, cov, tuple(sorted(older)),
                    tuple(sorted(fresh)))


def _kaplan_meier(done: list[float], alive: list[float]) -> tuple[list[float], list[float]]:
    """Share finished by each completion time; a censored age counts as at risk up to itself."""
    at_risk = len(done) + len(alive)
    survive, times, cdf = 1.0, [], []
    i = j = 0
    while i < len(done):
        t = done[i]
        while j < len(alive) and alive[j] < t:  # still running at an earlier age: leaves the risk set
            at_risk -= 1
            j += 1
        d = 0
        while i < len(done) and done[i] == t:
            d += 1
            i += 1
        survive *= 1.0 - d / at_risk
        at_risk -= d
        times.append(t)
        cdf.append(1.0 - survive)
    return times, cdf


def _log_sf(z: float) -> float:
    if z < 8.0:
        return math.log(0.5 * math.erfc(z / _SQRT2))
    return -0.5 * z * z - math.log(z * math.sqrt(2.0 * math.pi))


def _mills(z: float) -> float:
    """phi(z) / (1 - Phi(z)): how strongly a job still running at z pushes the fit later."""
    if z < 8.0:
        return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) / (0.5 * math.erfc(z / _SQRT2))
    return z + 1.0 / z


def _fit_lognormal(
    ys: list[float], cs: list[float], spread_prior: float, start: tuple[float, float] | None
) -> tuple[tuple[float, float], tuple[float, float, float]]:
    """MAP log-normal from exact (ys) and right-censored (cs) log-latencies; Newton steps with
    backtracking on (mu, log sigma). Returns the fit and the covariance of (mu, log sigma)."""
    s0 = math.log(spread_prior)
    tau2 = _SPREAD_PRIOR_SD**2
    if start is not None:
        mu, s = start[0], math.log(start[1])
    else:
        mu, s = sum(ys) / len(ys) + (spread_prior if cs else 0.0), s0

    def loglik(mu: float, s: float) -> float:
        sg = math.exp(s)
        v = -len(ys) * s - sum((y - mu) ** 2 for y in ys) / (2.0 * sg * sg)
        return v + sum(_log_sf((c - mu) / sg) for c in cs) - 0.5 * (s - s0) ** 2 / tau2

    def derivatives(mu: float, s: float) -> tuple[float, float, float, float, float]:
        sg = math.exp(s)
        gm, gs, hmm, hms, hss = 0.0, -(s - s0) / tau2, 0.0, 0.0, -1.0 / tau2
        for y in ys:
            z = (y - mu) / sg
            gm += z / sg
            gs += z * z - 1.0
            hmm -= 1.0 / (sg * sg)
            hms -= 2.0 * z / sg
            hss -= 2.0 * z * z
        for c in cs:
            z = (c - mu) / sg
            m = _mills(z)
            dm = m * (m - z)
            gm += m / sg
            gs += m * z
            hmm -= dm / (sg * sg)
            hms -= (m + z * dm) / sg
            hss -= m * z + z * z * dm
        return gm, gs, hmm, hms, hss

    for _ in range(25):
        gm, gs, hmm, hms, hss = derivatives(mu, s)
        det = hmm * hss - hms * hms
        if hmm < 0 and det > 0:
            dmu, ds = -(hss * gm - hms * gs) / det, -(hmm * gs - hms * gm) / det
        else:  # not concave here: a gradient step
            dmu, ds = 0.1 * gm * math.exp(2 * s), 0.1 * gs / max(1, len(ys) + len(cs))
        dmu, ds = max(-1.0, min(1.0, dmu)), max(-0.5, min(0.5, ds))
        base, step = loglik(mu, s), 1.0
        while step > 1e-3 and loglik(mu + step * dmu, s + step * ds) < base:
            step *= 0.5
        mu, s = mu + step * dmu, s + step * ds
        if abs(step * dmu) < 1e-5 and abs(step * ds) < 1e-5:
            break
    _, _, hmm, hms, hss = derivatives(mu, s)
    det = hmm * hss - hms * hms
    cov = (-hss / det, hms / det, -hmm / det) if det > 0 and hmm < 0 else (1.0, 0.0, 1.0)
    return (mu, math.exp(s)), cov


class LatencyEstimator:
    """The poller's memory of latencies: seeds from earlier runs, then every job it tracks.

    Rebuilding costs a sort and, while the distribution is not known well, a small fit; so it is
    redone at most every ``_min_interval`` seconds while the estimate is still rough, and after
    a batch of changes once it is settled.
    """

    def __init__(self, seed: Iterable[float], *, window: int = 256, spread_prior: float = 0.35,
                 precise: Callable[[Estimate], bool] | None = None) -> None:
        self._records: deque[float | Tracked] = deque((float(x) for x in seed), maxlen=max(16, window))
        self._ids: set[int] = set()
        self._spread_prior = spread_prior
        self._precise = precise or (lambda est: est.n_exact >= _KM_RICH)
        self._estimate = Estimate()
        self._changes = 1
        self._built = -math.inf
        self._settled = False
        self._oldest = 0.0

    def track(self, job: Tracked) -> None:
        """Count ``job`` in the cohort from now on (once)."""
        if id(job) in self._ids:
            return
        records = self._records
        if len(records) == records.maxlen and not isinstance(records[0], float):
            self._ids.discard(id(records[0]))
        records.append(job)
        self._ids.add(id(job))
        self._changes += 1

    def changed(self) -> None:
        """A tracked job finished or was seen still running: the next estimate may differ."""
        self._changes += 1

    def estimate(self, now: float, in_flight: Callable[[], Iterable[Tracked]]) -> Estimate:
        """The current estimate; ``in_flight`` (the jobs waiting for a poll) is read only on a rebuild."""
        if self._changes and (
            self._changes >= max(16, len(self._records) // 16)
            or (not self._settled and now - self._built >= self._min_interval())
        ):
            self._rebuild(now, in_flight())
        return self._estimate

    def _min_interval(self) -> float:
        """A small share of the latency (of the oldest age seen, before anything has finished)."""
        est = self._estimate
        scale = est.quantile(0.5) if est.n_exact else self._oldest
        return max(0.005, REBUILD_SHARE * scale)

    def _rebuild(self, now: float, in_flight: Iterable[Tracked]) -> None:
        exact: list[float] = []
        censored: list[float] = []
        for r in self._records:
            if isinstance(r, float):
                exact.append(r)
            elif r.ready_s is not None:
                exact.append(r.ready_s)
            else:
                censored.append(r.last_poll_age)
        first = min(exact) if exact else math.inf
        older, fresh = [], []
        self._oldest = max(censored, default=0.0)
        for job in in_flight:
            if job.ready_s is None:
                older.append(job.submitted_mono)
                if job.last_poll_age < first:
                    fresh.append(job.submitted_mono)
        self._estimate = estimate(exact, censored, spread_prior=self._spread_prior, older=older, fresh=fresh,
                                  start=self._estimate.fit)
        self._settled = self._precise(self._estimate)
        self._changes = 0
        self._built = now
