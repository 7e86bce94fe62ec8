"""What a run may do and how hard it tries: ``RunConfig`` and its two policies.

``RetryPolicy`` says how often each stage tries again and how long it waits between tries;
``PollPolicy`` says when a request is asked about. Every number the stages retry or poll by is read
from here, so a test (or a future flag) changes one object instead of constants in four modules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

# The poll ladders live with the schedule that climbs them; re-exported for older imports.
from batchgen.engine.schedule import BALANCED, ECONOMY, PROMPT, Ladder

__all__ = [
    "BALANCED",
    "ECONOMY",
    "PROMPT",
    "Ladder",
    "PollPolicy",
    "RetryPolicy",
    "RunConfig",
    "backoff_delay",
]


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: spreads retries of many items so they do not come back together."""
    r = rng or random
    # Clamp the exponent: 2 ** 1100 no longer fits a float, and the cap is reached long before.
    return r.uniform(0.5, 1.0) * min(cap, base * (2.0 ** min(max(0, attempt), 64)))


@dataclass(frozen=True)
class RetryPolicy:
    """How many times each stage tries again, and the backoff between tries.

    ``*_retries`` count the tries after the first. A result fetch retries quickly (its record is
    paid for and a whole poll cycle would be wasted), so its base never exceeds ``backoff_base_s``.
    """

    submit_retries: int = 5
    download_retries: int = 3
    fetch_retries: int = 3
    max_expiries: int = 3  # resubmits after an expired record, per item, over all runs
    backoff_base_s: float = 1.0
    submit_backoff_cap_s: float = 60.0
    poll_backoff_cap_s: float = 30.0
    fetch_backoff_base_s: float = 1.0
    fetch_backoff_cap_s: float = 60.0
    download_backoff_cap_s: float = 10.0
    # A 429 that names no reset time: the whole run pauses on this backoff, never beyond the cap.
    rate_limit_backoff_base_s: float = 1.0
    rate_limit_backoff_cap_s: float = 60.0
    rate_limit_max_pause_s: float = 300.0

    def submit_delay(self, failures: int) -> float:
        return backoff_delay(failures - 1, base=self.backoff_base_s, cap=self.submit_backoff_cap_s)

    def poll_delay(self, errors: int) -> float:
        return backoff_delay(errors - 1, base=self.backoff_base_s, cap=self.poll_backoff_cap_s)

    def fetch_delay(self, errors: int) -> float:
        base = min(self.fetch_backoff_base_s, self.backoff_base_s)
        return backoff_delay(errors - 1, base=base, cap=self.fetch_backoff_cap_s)

    def download_delay(self, tries: int) -> float:
        return backoff_delay(tries - 1, base=self.backoff_base_s, cap=self.download_backoff_cap_s)


@dataclass(frozen=True)
class PollPolicy:
    """When to ask about a request: the ladders, the cold start, the widest gap, the worker pool."""

    economy: Ladder = ECONOMY  # polls count against a known rate limit: every poll is a submit lost
    balanced: Ladder = BALANCED  # nothing says whether polls are free (the real service does not)
    prompt: Ladder = PROMPT  # polls are free (--rpm-scope submit): fetch results promptly
    cold_first_poll_s: float = 0.5  # with nothing learned yet: scouts probe from at most 0.5 s, doubling
    max_gap_s: float = 30.0
    # A first wave learns before it commits (schedule.py): how many jobs probe while nothing has
    # finished, how many once something has, how many completions before quantiles are trusted,
    # how well a rung's time must be known (standard error of its log) before everyone waits for it.
    scouts: int = 6
    recruits: int = 12
    trust_samples: int = 3
    precision: float = 0.06
    spread_prior: float = 0.35  # log-normal spread assumed until the completions say otherwise
    not_ready_retry: float = 0.05  # COMPLETED status but no result yet: ask again after this share of the latency
    workers: int = 128  # a first wave's jobs come due together: enough to poll them at once

    def for_scope(self, rpm_scope: str) -> PollPolicy:
        """When polls are free (``--rpm-scope submit``) a first wave learns eagerly: four times the
        scouts and recruits, an estimate twice as tight before everyone waits for it."""
        if rpm_scope == "all":
            return self
        return replace(self, scouts=4 * self.scouts, recruits=4 * self.recruits, precision=self.precision / 2)

    def ladder_for(self, rpm_scope: str, rate_limited: bool) -> Ladder:
        """Dense when polls are free, sparse when they eat into a known rate limit."""
        if rpm_scope != "all":
            return self.prompt
        if rate_limited:
            return self.economy
        return self.balanced


@dataclass(frozen=True)
class RunConfig:
    """One run's settings; the fields before ``submit_workers`` are the ones the command line sets."""

    slug: str
    price_usd: float
    concurrency: int = 16
    rpm: float | None = None
    rpm_scope: str = "all"  # which requests count against --rpm: "all" keyed requests or "submit" only
    max_images: int | None = None
    max_cost_usd: float | None = None
    retention_s: float = 3600.0
    expected_latency_s: float = 21.6
    submit_workers: int = 8
    download_workers: int = 8
    max_image_bytes: int = 50 * 1024 * 1024
    interrupt_grace_s: float = 3.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)

    @property
    def retention_margin_s(self) -> float:
        """How long before the record's end the last poll must happen."""
        return min(120.0, self.retention_s * 0.05)
