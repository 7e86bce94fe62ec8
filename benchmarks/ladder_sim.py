#!/usr/bin/env python3
"""Steady-state polls per image and median ready→fetch delay of the poll ladders (no server).

Draws log-normal latencies (mean 21.6 s, spread ``--sigma``), learns 256 of them, and polls each job
at the ladder's quantiles, then in steps of the ladder's back-off. The figures in BENCHMARKS.md that
explain why P2's two targets conflict come from here: ``python benchmarks/ladder_sim.py``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from batchgen.engine.poll import BALANCED, ECONOMY, PROMPT


def simulate(ladder, sigma: float, n: int = 20000, mean: float = 21.6, seed: int = 1) -> tuple[float, float]:
    rng = random.Random(seed)
    mu = math.log(mean) - sigma * sigma / 2
    learned = sorted(rng.lognormvariate(mu, sigma) for _ in range(256))

    def q(p: float) -> float:
        return learned[min(len(learned) - 1, int(p * (len(learned) - 1) + 0.5))]

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
    return statistics.mean(polls), 100 * statistics.median(delays) / mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sigma", type=float, nargs="*", default=[0.35, 0.2, 0.1])
    args = ap.parse_args()
    for sigma in args.sigma:
        for name, ladder in (("economy", ECONOMY), ("balanced", BALANCED), ("prompt", PROMPT)):
            polls, delay = simulate(ladder, sigma)
            print(f"sigma {sigma:<5} {name:<9} polls/image {polls:5.2f}   median ready->fetch {delay:5.1f} % of mean")


if __name__ == "__main__":
    main()
