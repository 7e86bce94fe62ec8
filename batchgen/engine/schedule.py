"""When to ask about a request next: the poll ladders and the schedule (pure, time passed in).

Every job is polled at rising quantiles of the latency distribution (a *ladder*), then with
growing gaps. Which quantiles depends on what a poll costs (``PollPolicy.ladder_for``); each
ladder below is the best fixed-quantile ladder for the delay it aims at when the distribution
is known (``benchmarks/ladder_sim.py`` prints that front).

The distribution is rarely known at the start. A first wave — every job submitted before any
has finished — used to poll every job at 0.5, 1, 2 s and then at quantiles learned from the few
fastest completions: about six polls per image. Here the wave learns before it commits:

1. Nothing finished yet: only the ``scouts`` oldest jobs poll, each on a doubling ladder shifted
   by its rank so that together they probe about every ``2 ** (1 / scouts)``; the rest wait.
2. The first completions: the ``recruits`` oldest jobs poll once at that age and then in steps
   of a quarter, until ``trust_samples`` have finished.
3. The scale is known but not well: the estimate (latency.py) says how sure it is of each rung's
   time. A vanguard of jobs not yet asked polls a little early (1.5 standard errors), as many
   as it takes to know the rung to ``precision``; everyone else waits for the rung itself, and
   looks again while waiting (no request: the poller just asks this function again).
4. Known to ``precision``: every job polls at its ladder's rungs.

A resumed run, or any run past its first wave, starts at 4 from the latencies already seen.
Waiting is free: a job's next time is recomputed when it comes due (``due_at``), and it is polled
only if the time is still now. No poll is ever due past the job's deadline.
"""

from __future__ import annotations

import math
from typing import Protocol

from batchgen.engine.latency import Estimate

__all__ = ["BALANCED", "ECONOMY", "PROMPT", "Ladder", "PollKnobs", "due_at", "next_poll_at", "settled"]

# A poll ladder: (quantiles of the latency, first gap beyond them as a fraction of the median,
# growth of the gap after that).
Ladder = tuple[tuple[float, ...], float, float]

# Polls count against a known rate limit: about 1.2 polls per image, the fetch waits ~43 % of the mean.
ECONOMY: Ladder = ((0.85, 0.97), 0.1, 1.5)
# Nothing says whether polls are free: about 1.5 polls per image, ~23 % of the mean.
BALANCED: Ladder = ((0.73, 0.87, 0.94, 0.975), 0.1, 1.5)
# Polls are free: fetch promptly, about 4.9 polls per image, ~5 % of the mean.
PROMPT: Ladder = ((0.39, 0.46, 0.52, 0.575, 0.625, 0.675, 0.725, 0.765, 0.795, 0.825), 0.1, 1.5)

_EARLY = 1.5  # the vanguard polls this many standard errors before a rung's estimated time
_LOOK = 0.05  # a waiting job looks again after this share of its age (no request)
_RECRUIT_STEP = 1.25  # recruits probe at this ratio of ages until enough have finished
_SNAP = 0.5  # a rung closer to the last (early) poll than half its spacing is skipped


class PollKnobs(Protocol):
    """The settings the schedule reads (``config.PollPolicy`` is one)."""

    @property
    def cold_first_poll_s(self) -> float: ...
    @property
    def max_gap_s(self) -> float: ...
    @property
    def scouts(self) -> int: ...
    @property
    def recruits(self) -> int: ...
    @property
    def trust_samples(self) -> int: ...
    @property
    def precision(self) -> float: ...


class Polled(Protocol):
    """What the schedule reads from a job (``context.Job`` is one)."""

    submitted_mono: float
    deadline_mono: float
    last_poll_age: float  # age at the last poll that found it unfinished (0: never)
    ready_s: float | None  # set once a poll found it finished


def settled(est: Estimate, knobs: PollKnobs) -> bool:
    """Whether the estimate is good enough that no job needs to poll early to improve it."""
    return est.n_exact >= knobs.trust_samples and est.error(0.75) <= _precision(est, knobs)


def next_poll_at(job: Polled, now: float, est: Estimate, ladder: Ladder, knobs: PollKnobs,
                 default_latency: float) -> float:
    """When to look at ``job`` next: ``due_at``, but never before ``now`` (nor past the deadline)."""
    return min(max(due_at(job, now, est, ladder, knobs, default_latency), now + 0.001), job.deadline_mono)


def due_at(job: Polled, now: float, est: Estimate, ladder: Ladder, knobs: PollKnobs, default_latency: float) -> float:
    """The time ``job`` should be polled given what is known at ``now`` (at or before ``now``:
    poll it now). Asked again when that time comes, the answer may be "later" — the estimate
    moved, or the job was only to look whether others had learned enough — or "now"."""
    sub, age = job.submitted_mono, now - job.submitted_mono
    if job.ready_s is not None:  # finished, its result not yet read: ask again now
        at = now
    elif est.n_exact < max(1, knobs.trust_samples):
        when, look = _cold(job, age, est, knobs, default_latency)
        at = _on_tick(sub + when, age) if look else sub + when
    else:
        when, look, rung = _warm(job, age, est, ladder, knobs)
        at = min(_on_tick(sub + when, age), sub + rung) if look else sub + when
    return min(at, job.deadline_mono)


def _cold(job: Polled, age: float, est: Estimate, knobs: PollKnobs, default_latency: float) -> tuple[float, bool]:
    """Steps 1 and 2: a few jobs probe, the rest look again shortly: (an age, whether only to look)."""
    last, max_gap = job.last_poll_age, knobs.max_gap_s
    rank = est.rank(job.submitted_mono, est.older)
    first = min(max(default_latency, 0.05) * 0.5, knobs.cold_first_poll_s)
    if est.n_exact == 0:
        n = max(1, knobs.scouts)
        if rank < n:
            probe = _next_on_grid(last, first * 2.0 ** (rank / n), 2.0)
            return (min(probe, last + max_gap) if last > 0 else probe), False
        return min(max(age, first) * 2.0 ** (1.0 / n), age + max_gap), True
    base = est.times[0]
    if rank < max(knobs.recruits, knobs.scouts):
        if last < base:  # once at the age of the first completion; a younger job climbs the cold ladder to it
            return min(base, _next_on_grid(last, first, 2.0)), False
        return min(_next_on_grid(last, base, _RECRUIT_STEP), last + max_gap), False
    return min(max(age, base) * (1.0 + _LOOK), age + max_gap), True


def _warm(job: Polled, age: float, est: Estimate, ladder: Ladder, knobs: PollKnobs) -> tuple[float, bool, float]:
    """Steps 3 and 4: the next rung after the last poll, early for the vanguard:
    (an age, whether only to look, the rung's age)."""
    quantiles, first_gap, growth = ladder
    last = job.last_poll_age
    median = est.quantile(0.5)
    min_gap = max(0.02, 0.03 * median)
    prev = 0.0
    for i, q in enumerate(quantiles):
        t = est.quantile(q)
        # Skip a rung the last poll came close to (an early poll): little would finish in between.
        spacing = (t - prev) if i else (est.quantile(quantiles[1]) - t if len(quantiles) > 1 else t)
        if t > last + max(min_gap, _SNAP * spacing):
            break
        prev = t
    else:
        t = _beyond(est.quantile(quantiles[-1]), last + min_gap, first_gap * median, growth, knobs.max_gap_s)
        return t, False, t
    se = est.error(q)
    if se <= _precision(est, knobs):
        return t, False, t
    early = max(t * math.exp(-_EARLY * se), est.times[0])
    if last < est.times[0] and est.rank(job.submitted_mono, est.fresh) < _vanguard(est, se, knobs):
        return early, False, t
    if t <= age:
        return t, False, t
    return max(early, age * (1.0 + _LOOK), age + min_gap), True, t


def _precision(est: Estimate, knobs: PollKnobs) -> float:
    """``precision`` for 256 jobs in flight: a larger wave gains more from knowing its rungs well,
    a smaller one pays more per job to learn them (the cost of the early polls is shared by fewer)."""
    return knobs.precision * (256.0 / max(16, len(est.older))) ** 0.5


def _vanguard(est: Estimate, se: float, knobs: PollKnobs) -> int:
    """How many more early polls would bring the error to the precision wanted (a round at most)."""
    n = max(1, est.informative)
    needed = math.ceil(n * ((se / _precision(est, knobs)) ** 2 - 1.0))
    return min(max(knobs.recruits, n // 2), needed)


def _beyond(t: float, after: float, gap: float, growth: float, max_gap: float) -> float:
    """Past the last rung: gaps from ``gap`` growing by ``growth`` up to ``max_gap``; the first
    step after ``after`` (an age)."""
    gap = max(gap, 1e-3)
    while t <= after and gap < max_gap:
        t += gap
        gap *= growth
    if t <= after:
        t += max_gap * (math.floor((after - t) / max_gap) + 1)
    return t


def _on_tick(at: float, age: float) -> float:
    """A time to look again, rounded up to a grid of about 1 % of the age (a power of two), so that
    jobs of similar age look together: one pass of the poller for many, not one for each."""
    tick = 2.0 ** math.floor(math.log2(max(0.01 * age, 1e-3)))
    return math.ceil(at / tick) * tick


def _next_on_grid(age: float, start: float, ratio: float) -> float:
    """The first of start, start * ratio, start * ratio ** 2, ... after ``age``."""
    if age < start:
        return start
    k = math.floor(math.log(age / start) / math.log(ratio)) + 1
    t = start * ratio**k
    while t <= age:
        t *= ratio
    return t
