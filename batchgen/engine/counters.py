"""What a run counts, and the read-only view of it that progress displays read.

The counters are this run's events (the ledger holds every run's); the stages report outcomes to
``Run`` and it counts them, so no stage writes a counter. ``Snapshot`` is what a display may see:
numbers only, no handle on the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = ["Counters", "Snapshot", "SnapshotSource"]


@dataclass
class Counters:
    submitted: int = 0
    downloaded: int = 0
    failed: int = 0
    expired_resubmits: int = 0
    uncertain_resubmits: int = 0  # submits whose answer never came (a crash, a lost answer), sent again
    recovered: int = 0  # requests found in the account's history instead of being paid for again
    possible_double_charges: int = 0  # submits retried after an answer was lost
    rate_limited: int = 0  # 429 answers; the limiter counts them, the conclusion copies them here
    retries: int = 0
    polls: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    items: int  # items in this run
    done: int  # of them downloaded, by this run or an earlier one
    downloaded: int  # downloaded by this run
    failed: int  # failed in this run
    in_flight: int  # being submitted, polled or downloaded
    spent_usd: float  # reported costs, plus the price of results that reported none
    per_min: float  # images downloaded per minute since this run started
    rate_limited: int  # 429 answers so far


# Called by a display whenever it draws; cheap (no walk over the items).
SnapshotSource = Callable[[], Snapshot]
