#!/usr/bin/env python3
"""Polls per image and median ready→fetch delay of the poll schedule, simulated (no server).

Prints, for a log-normal latency (mean 21.6 s, spread ``--sigma``; the emulator's default is 0.35):

1. the front: the fewest polls per image any fixed-quantile ladder needs for a given median delay
   when the distribution is known exactly (the best ladder of up to ``--rungs`` rungs, searched);
2. steady state — a resumed run, or any run past its first wave: each ladder polling at the
   quantiles of 256 learned latencies, beside the front at the delay it reaches, and the SDK's
   fixed 1 s interval;
3. a cold first wave: ``--wave`` jobs submitted at once (over 8 % of the mean latency, as the
   emulator sees in P2) with nothing learned yet, driven through batchgen's own schedule and
   estimator (schedule.py, latency.py); the mean and the 90th percentile over ``--waves`` waves.

The figures in BENCHMARKS.md (P2) come from ``python benchmarks/ladder_sim.py``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from dataclasses import dataclass
from statistics import NormalDist

from batchgen.engine.config import PollPolicy
from batchgen.engine.latency import LatencyEstimator
from batchgen.engine.poll import BALANCED, ECONOMY, PROMPT
from batchgen.engine.schedule import due_at, next_poll_at, settled

MEAN = 21.6
LADDERS = (("economy", ECONOMY), ("balanced", BALANCED), ("prompt", PROMPT))
_N = NormalDist()


# ---- 1. the front: the best fixed-quantile ladder for a delay, the distribution known ----------


def exact(quantiles, sigma: float, tail=(0.1, 1.5)) -> tuple[float, float]:
    """Polls per image and median delay (% of the mean) of a quantile ladder, computed, not sampled."""
    return _exact_z([_N.inv_cdf(q) for q in quantiles], sigma, tail)


def _exact_z(zs, sigma: float, tail=(0.1, 1.5)) -> tuple[float, float]:
    mu = -sigma * sigma / 2  # mean 1
    ts = [math.exp(mu + sigma * z) for z in zs]
    gap, t = tail[0] * math.exp(mu), ts[-1]
    while _cdf(t, mu, sigma) < 0.99999:
        t += gap
        gap *= tail[1]
        ts.append(t)
    polls = 1 + sum(1 - _cdf(t, mu, sigma) for t in ts[:-1])

    def share_within(d: float) -> float:
        prev, s = 0.0, 0.0
        for t in ts:
            s += max(0.0, _cdf(t, mu, sigma) - _cdf(max(prev, t - d), mu, sigma))
            prev = t
        return s

    lo, hi = 0.0, 5.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if share_within(mid) >= 0.5 else (mid, hi)
    return polls, 100 * hi


def _cdf(t: float, mu: float, sigma: float) -> float:
    return _N.cdf((math.log(t) - mu) / sigma) if t > 0 else 0.0


def best_ladder(sigma: float, delay: float, rungs: int, seed: int = 1, iters: int = 1200) -> tuple[float, float, tuple]:
    """The fewest polls with a median delay at most ``delay`` %: a random search from a few starts."""
    rng = random.Random(seed)

    def cost(zs):
        polls, d = _exact_z(zs, sigma)
        return polls + (10 * (d - delay) if d > delay else 0.0), polls, d

    best = None
    for _ in range(5):
        zs = sorted(rng.uniform(-0.5, 2.5) for _ in range(rungs))
        c, step = cost(zs), 0.3
        for i in range(iters):
            cand = sorted(z + rng.gauss(0, step) for z in zs)
            cc = cost(cand)
            if cc[0] < c[0]:
                zs, c = cand, cc
            if i % 300 == 299:
                step *= 0.5
        if best is None or c[0] < best[0][0]:
            best = (c, zs)
    (_, polls, d), zs = best
    return polls, d, tuple(round(_N.cdf(z), 3) for z in zs)


# ---- 2. steady state: quantiles of 256 learned latencies ----------------------------------------


def steady(ladder, sigma: float, n: int = 20000, seed: int = 1) -> tuple[float, float]:
    rng = random.Random(seed)
    mu = math.log(MEAN) - sigma * sigma / 2
    learned = sorted(rng.lognormvariate(mu, sigma) for _ in range(256))

    def q(p: float) -> float:
        return learned[min(len(learned) - 1, math.ceil(p * len(learned)) - 1)]

    quantiles, first_gap, growth = ladder
    points = [q(p) for p in quantiles]
    median = q(0.5)
    polls, delays = [], []
    for _ in range(n):
        lat = rng.lognormvariate(mu, sigma)
        k, t = 0, None
        for p in points:
            k += 1
            if p >= lat:
                t = p
                break
        if t is None:
            t, gap = points[-1], first_gap * median
            while t < lat:
                t += gap
                k += 1
                gap *= growth
        polls.append(k)
        delays.append(t - lat)
    return statistics.mean(polls), 100 * statistics.median(delays) / MEAN


def fixed_interval(interval: float, sigma: float, n: int = 20000, seed: int = 1) -> tuple[float, float]:
    """The SDK's wait(): a poll every ``interval`` seconds from the submit."""
    rng = random.Random(seed)
    mu = math.log(MEAN) - sigma * sigma / 2
    lats = [rng.lognormvariate(mu, sigma) for _ in range(n)]
    polls = [math.ceil(lat / interval) for lat in lats]
    delays = [k * interval - lat for k, lat in zip(polls, lats, strict=True)]
    return statistics.mean(polls), 100 * statistics.median(delays) / MEAN


# ---- 3. a cold first wave through batchgen's own schedule ----------------------------------------


@dataclass(eq=False)
class _Job:
    submitted_mono: float
    latency: float
    deadline_mono: float = math.inf
    last_poll_age: float = 0.0
    ready_s: float | None = None


def cold_wave(n: int, ladder, sigma: float, seed: int = 1, policy: PollPolicy | None = None,
              rtt: float = 0.004, mean: float = 2.16) -> tuple[float, float]:
    """One wave of ``n`` jobs at P2's scale (mean 2.16 s, the worker expecting 21.6 s)."""
    policy = policy or PollPolicy()
    rng = random.Random(seed)
    mu = math.log(mean) - sigma * sigma / 2
    jobs = [_Job(rng.uniform(0, 0.08 * mean), rng.lognormvariate(mu, sigma)) for _ in range(n)]
    est = LatencyEstimator([], window=max(256, 2 * n), spread_prior=policy.spread_prior,
                           precise=lambda e: settled(e, policy))
    heap: list[tuple[float, int, _Job]] = []

    def waiting():
        return (entry[2] for entry in heap)

    for i, job in enumerate(sorted(jobs, key=lambda j: j.submitted_mono)):
        est.track(job)
        est.changed()
        now = job.submitted_mono
        heapq.heappush(heap, (next_poll_at(job, now, est.estimate(now, waiting), ladder, policy, MEAN), i, job))
    polls, delays, seq = 0, [], n
    while heap:
        now, _, job = heapq.heappop(heap)
        at = due_at(job, now, est.estimate(now, waiting), ladder, policy, MEAN)
        if at <= now:
            polls += 1
            now += rtt
            age = now - job.submitted_mono
            est.changed()
            if job.latency <= age:
                job.ready_s = job.latency
                delays.append(age - job.latency)
                continue
            job.last_poll_age = age
            at = next_poll_at(job, now, est.estimate(now, waiting), ladder, policy, MEAN)
        seq += 1
        heapq.heappush(heap, (at, seq, job))
    return polls / n, 100 * statistics.median(delays) / mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigma", type=float, nargs="*", default=[0.35])
    ap.add_argument("--rungs", type=int, default=4, help="rungs of the best ladders searched for the front")
    ap.add_argument("--wave", type=int, nargs="*", default=[150, 300], help="jobs in a cold first wave")
    ap.add_argument("--waves", type=int, default=20, help="waves simulated per size (mean and 90th percentile)")
    args = ap.parse_args()
    for sigma in args.sigma:
        print(f"\nlog-normal spread {sigma}: the front (best {args.rungs}-rung ladder, distribution known)")
        print("| median delay ≤ | polls / image | quantiles |\n| --- | --- | --- |")
        for d in (15, 20, 23, 25, 30, 45):
            polls, got, qs = best_ladder(sigma, d, args.rungs if d < 40 else 2)
            print(f"| {d} % | {polls:.3f} | {', '.join(f'{q:g}' for q in qs)} |")

        print(f"\nsteady state (256 learned latencies), spread {sigma}")
        print("| schedule | polls / image | median delay, % of mean | front at that delay | above it |")
        print("| --- | --- | --- | --- | --- |")
        for name, ladder in LADDERS:
            polls, delay = (statistics.mean(x) for x in zip(*(steady(ladder, sigma, seed=s) for s in range(1, 6)),
                                                             strict=True))
            exact_polls, exact_delay = exact(ladder[0], sigma, ladder[1:])
            rungs = len(ladder[0]) if name != "prompt" else 8
            front = best_ladder(sigma, delay, rungs)[0]
            print(f"| {name} | {polls:.3f} | {delay:.1f} | {front:.3f} | {100 * (polls / front - 1):+.1f} % |"
                  f"  (exact quantiles: {exact_polls:.3f} polls, {exact_delay:.1f} %)")
        polls, delay = fixed_interval(1.0, sigma)
        print(f"| SDK wait(), every 1.0 s | {polls:.2f} | {delay:.1f} | | |")

        for n in args.wave:
            print(f"\ncold first wave of {n} jobs, spread {sigma}, {args.waves} waves")
            print("| ladder | polls / image: mean, p90 | median delay %: mean, p90 |\n| --- | --- | --- |")
            for name, ladder in LADDERS:
                policy = PollPolicy().for_scope("submit" if name == "prompt" else "all")
                runs = [cold_wave(n, ladder, sigma, seed=s, policy=policy) for s in range(args.waves)]
                p = sorted(r[0] for r in runs)
                d = sorted(r[1] for r in runs)
                i90 = min(len(runs) - 1, int(0.9 * len(runs)))
                print(f"| {name} | {statistics.mean(p):.2f}, {p[i90]:.2f} | {statistics.mean(d):.1f}, {d[i90]:.1f} |")


if __name__ == "__main__":
    main()
