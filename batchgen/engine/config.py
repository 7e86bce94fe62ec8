"""What a run may do and how hard it tries: ``RunConfig`` and its policies.

``RetryPolicy`` says how often each stage tries again and how long it waits between tries;
``PollPolicy`` says when a request is asked about; ``RecoveryPolicy`` how the account's request
history is asked before anything is paid for again. Every number the stages retry or poll by is
read from here, so a test (or a future flag) changes one object instead of constants in modules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

# The poll ladders live with the schedule that climbs them; re-exported for older imports.
from batchgen.engine.schedule import BALANCED, ECONOMY, PROMPT, Ladder
from batchgen.store.shards import ImageLayout

__all__ = [
    "BALANCED",
    "ECONOMY",
    "PROMPT",
    "Ladder",
    "PollPolicy",
    "RecoveryPolicy",
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
    # No request has reached the service (refused, DNS, TLS) for this long: the run ends (breaker.py).
    # Shorter outages are ridden out: a request that never left counts against no item's retries.
    unreachable_after_s: float = 60.0
    unreachable_backoff_cap_s: float = 5.0

    def submit_delay(self, failures: int) -> float:
        return backoff_delay(failures - 1, base=self.backoff_base_s, cap=self.submit_backoff_cap_s)

    def poll_delay(self, errors: int) -> float:
        return backoff_delay(errors - 1, base=self.backoff_base_s, cap=self.poll_backoff_cap_s)

    def fetch_delay(self, errors: int) -> float:
        base = min(self.fetch_backoff_base_s, self.backoff_base_s)
        return backoff_delay(errors - 1, base=base, cap=self.fetch_backoff_cap_s)

    def download_delay(self, tries: int) -> float:
        return backoff_delay(tries - 1, base=self.backoff_base_s, cap=self.download_backoff_cap_s)

    def unreachable_delay(self, tries: int) -> float:
        """Short, so that the first request after an outage finds the service back within seconds."""
        return backoff_delay(tries - 1, base=self.backoff_base_s, cap=self.unreachable_backoff_cap_s)


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
    not_ready_tries: int = 12  # ... doubling the wait each time, up to max_gap_s; then the item fails (retryable)
    # Keyed requests about one job in one run (status and result; 429 answers aside). A job that
    # runs its whole retention takes about 130 at the widest gap; past this, the service is not
    # answering sensibly and the item fails (retryable) instead of being asked forever.
    max_requests_per_job: int = 300
    workers: int = 128  # a first wave's jobs come due together: enough to poll them at once
    # A rate-limited run's tail (nothing left to submit): how many requests per job in flight and
    # per median latency the limit must leave spare before the balanced (about 2.5 requests per
    # image with its result) or the prompt ladder (about 6) replaces the economy one.
    tail_balanced_spare: float = 5.0
    tail_prompt_spare: float = 12.0

    def for_scope(self, rpm_scope: str) -> PollPolicy:
        """When polls are free (``--rpm-scope submit``) a first wave learns eagerly: four times the
        scouts and recruits, an estimate twice as tight before everyone waits for it."""
        if rpm_scope == "all":
            return self
        return replace(self, scouts=4 * self.scouts, recruits=4 * self.recruits, precision=self.precision / 2)

    def ladder_for(self, rpm_scope: str, rate_limited: bool, spare: float | None = None) -> Ladder:
        """Dense when polls are free, sparse when they eat into a known rate limit.

        ``spare``: under a known limit with nothing left to submit (a run's tail), the requests the
        limit allows per job still in flight during one median latency. A poll then takes no
        submit's place, only other jobs' requests: with enough of them to spare, the tail polls
        as densely as the budget allows instead of leaving it idle while its last jobs wait for
        their sparse rungs."""
        if rpm_scope != "all":
            return self.prompt
        if rate_limited:
            if spare is not None and spare >= self.tail_prompt_spare:
                return self.prompt
            if spare is not None and spare >= self.tail_balanced_spare:
                return self.balanced
            return self.economy
        return self.balanced


@dataclass(frozen=True)
class RecoveryPolicy:
    """How the request history is asked before paying again (engine/recover.py, engine/lost.py).

    ``landing_wait_s`` is the documented wait: a submit whose answer was lost is paid for again
    only when no row of the history matches it this long after its intent (the history trails the
    service; a record that lands later than this is the one case where an item can be paid twice).
    ``expired_wait_s``: how long an expired record may still show PENDING (or not landed) in the
    history before the item fails, retryable, rather than being paid for again while it may run.
    ``patience_s``: how long the history may fail to answer (429, 5xx) about one item before this
    run stops waiting for it (a lost answer then stays uncertain for the next run to check).
    """

    landing_wait_s: float = 120.0
    expired_wait_s: float = 1800.0
    patience_s: float = 900.0
    first_recheck_s: float = 1.0  # asked again after this, doubling up to recheck_cap_s
    recheck_cap_s: float = 15.0
    skew_s: float = 300.0  # how far the service's clock and ours may disagree (row times vs intents)
    max_pages: int = 200  # list pages per sweep, newest first, before the sweep counts as failed
    call_tries: int = 4  # tries of one history call (429, 5xx) before its caller decides
    workers: int = 4  # lookups by id at once

    def recheck(self, tries: int) -> float:
        """The wait before the ``tries``-th question again (1, 2, 4 ... seconds, capped)."""
        return min(self.recheck_cap_s, self.first_recheck_s * 2.0 ** min(max(0, tries - 1), 30))


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
    image_layout: ImageLayout = ImageLayout.BUCKETS  # resolved (never AUTO): store.shards.choose_layout
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)

    @property
    def retention_margin_s(self) -> float:
        """How long before the record's end the last poll must happen."""
        return min(120.0, self.retention_s * 0.05)
