"""Configuration and in-memory state of the emulator: jobs, money, rate windows, counters.

Job progress is computed from timestamps (submission time plus a drawn latency) rather than by a
task per job, so ten thousand queued jobs cost a dict entry each. Money is settled lazily but
consistently: before any request is answered and before counters are read, every job whose
completion time has passed is settled in completion order (charged if it COMPLETED, counted if it
FAILED). A job is therefore charged exactly once, at its completion time, whether or not anyone
ever looks at it, and ``charged_usd`` always equals price × jobs COMPLETED so far.
"""

from __future__ import annotations

import heapq
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from batchgen.core.fastjson import canonical_json
from batchgen.models import get_model
from batchgen.sandbox.faults import FaultPlan, parse_faults
from batchgen.sandbox.filestore import FileRecord, FileStore
from batchgen.sandbox.keys import KeyBook

__all__ = ["FAIL_MARKER", "Job", "RateLimiter", "SandboxConfig", "SandboxState", "utc_iso"]

FAIL_MARKER = "[sandbox:fail]"
_MICRO = 1_000_000


@dataclass
class SandboxConfig:
    """Every knob of the emulator; durations are in service seconds, multiplied by ``time_scale``."""

    latency: float = 21.6
    latency_sigma: float = 0.35
    time_scale: float = 1.0
    retention: float = 3600.0
    file_retention: float = 7 * 24 * 3600.0
    rpm: int | None = None
    rpm_scope: Literal["submit", "all"] = "submit"
    rpm_window: Literal["fixed", "sliding"] = "fixed"
    credits: float = 1000.0
    price: float | None = None  # None: the model table's listed price
    api_key: str | None = None
    faults: str | Mapping[str, float] | None = None
    fault_seed: int | None = None
    retry_after: bool = False
    slow_seconds: float = 30.0
    queue_fraction: float = 0.15
    output_shape: Literal["list", "string", "object"] = "list"
    history: bool = True  # False: the request-history endpoints answer 404, as on a host without them
    history_lag: float = 0.0  # how far the history trails the service
    history_outputs: int = 1  # rows per COMPLETED request in the list (one per output)
    history_body: Literal["object", "string"] = "object"  # how a row carries the submitted JSON
    history_dates: Literal["iso", "http"] = "iso"  # ISO 8601 or HTTP-date timestamps
    store_dir: str | None = None  # where file records persist, so a restarted emulator serves old URLs
    fault_probabilities: dict[str, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def positive(name: str, value: float, allow_zero: bool = True) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if value < 0 or (value == 0 and not allow_zero):
                raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

        positive("latency", self.latency)
        positive("latency_sigma", self.latency_sigma)
        positive("time_scale", self.time_scale, allow_zero=False)
        positive("retention", self.retention, allow_zero=False)
        positive("file_retention", self.file_retention, allow_zero=False)
        positive("credits", self.credits)
        positive("slow_seconds", self.slow_seconds)
        if self.price is not None:
            positive("price", self.price)
        if not 0.0 <= self.queue_fraction < 1.0:
            raise ValueError(f"queue_fraction must be in [0, 1), got {self.queue_fraction!r}")
        if self.rpm is not None and (
            isinstance(self.rpm, bool) or not isinstance(self.rpm, int) or self.rpm < 1
        ):
            raise ValueError(f"rpm must be a positive integer or None, got {self.rpm!r}")
        if self.rpm_scope not in ("submit", "all"):
            raise ValueError(f"rpm_scope must be 'submit' or 'all', got {self.rpm_scope!r}")
        if self.rpm_window not in ("fixed", "sliding"):
            raise ValueError(f"rpm_window must be 'fixed' or 'sliding', got {self.rpm_window!r}")
        if self.output_shape not in ("list", "string", "object"):
            raise ValueError(f"output_shape must be 'list', 'string' or 'object', got {self.output_shape!r}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (use None to accept any key)")
        positive("history_lag", self.history_lag)
        self._check_history()
        self.fault_probabilities = parse_faults(self.faults)

    def _check_history(self) -> None:
        if not isinstance(self.history, bool):
            raise ValueError(f"history must be True or False, got {self.history!r}")
        n = self.history_outputs
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"history_outputs must be a positive integer, got {n!r}")
        if self.history_body not in ("object", "string"):
            raise ValueError(f"history_body must be 'object' or 'string', got {self.history_body!r}")
        if self.history_dates not in ("iso", "http"):
            raise ValueError(f"history_dates must be 'iso' or 'http', got {self.history_dates!r}")

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def price_for(self, slug: str) -> float:
        if self.price is not None:
            return self.price
        spec = get_model(slug)
        return spec.price_usd if spec is not None else 0.10


def utc_iso(wall: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: scaled windows are often shorter than a second."""
    ms = math.ceil(wall * 1000) / 1000
    return datetime.fromtimestamp(ms, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class Job:
    id: str
    slug: str
    key: str
    params: dict[str, Any]
    width: int
    height: int
    submitted: float
    queued_until: float
    done_at: float
    error: str | None
    price_micro: int
    settled: bool = False
    first_fetch: float | None = None  # when a result with the output was first served

    def phase(self, now: float) -> str:
        if now < self.queued_until:
            return "QUEUED"
        if now < self.done_at:
            return "PROCESSING"
        return "FAILED" if self.error is not None else "COMPLETED"

    def metrics(self, now: float) -> dict[str, float]:
        if now < self.done_at:
            return {}
        queue = self.queued_until - self.submitted
        total = self.done_at - self.submitted
        return {
            "queue_time": round(queue, 4),
            "inference_time": round(total - queue, 4),
            "total_time": round(total, 4),
        }

    @property
    def file_name(self) -> str:
        return f"{self.id}.png"


class RateLimiter:
    """Per-key request budget over a (scaled) 60 s window, fixed or sliding."""

    def __init__(self, rpm: int, window: float, kind: Literal["fixed", "sliding"]) -> None:
        self.rpm = rpm
        self.window = window
        self.kind = kind
        self._fixed: dict[str, tuple[float, int]] = {}
        self._sliding: dict[str, deque[float]] = {}
        self.windows: Counter[str] = Counter()  # fixed windows opened per key: the limits a run used

    def acquire(self, key: str, now: float) -> float | None:
        """Count one request; returns ``None`` if allowed, else the monotonic instant the window resets."""
        if self.kind == "fixed":
            start, count = self._fixed.get(key, (now, 0))
            if now >= start + self.window:
                start, count = now, 0
            if count == 0:
                self.windows[key] += 1
            if count >= self.rpm:
                return start + self.window
            self._fixed[key] = (start, count + 1)
            return None
        stamps = self._sliding.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) >= self.rpm:
            return stamps[0] + self.window
        stamps.append(now)
        return None


class SandboxState:
    """Jobs, balance and counters, shared by every handler of one emulator instance."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.faults = FaultPlan(config.fault_probabilities, config.fault_seed)
        self._latency_rng = random.Random(None if config.fault_seed is None else config.fault_seed ^ 0x5EED)
        self.limiter = (
            RateLimiter(config.rpm, config.scaled(60.0), config.rpm_window)
            if config.rpm is not None
            else None
        )
        self.jobs: dict[str, Job] = {}
        self._order: deque[Job] = deque()
        self._due: list[tuple[float, int, str]] = []
        self._seq = 0
        self._bodies: set[str] = set()
        self.balance_micro = round(config.credits * _MICRO)
        self.charged_micro = 0
        self.counters: Counter[str] = Counter()
        self.submits_rejected: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.fetch_delays: deque[float] = deque(maxlen=100_000)
        self.keys = KeyBook()
        self.files = FileStore(config.store_dir) if config.store_dir is not None else None

    # -- time ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def wall_at(self, instant: float) -> float:
        """Map a clock instant to wall-clock seconds, for headers that speak UTC."""
        return time.time() + (instant - self.now())

    # -- money --------------------------------------------------------------------------------
    @property
    def balance(self) -> float:
        return self.balance_micro / _MICRO

    def set_faults(self, spec: str | Mapping[str, float] | None, seed: int | None = None) -> None:
        self.faults = FaultPlan(parse_faults(spec), seed)

    def set_credits(self, usd: float) -> None:
        if isinstance(usd, bool) or not isinstance(usd, int | float) or math.isnan(usd):
            raise ValueError(f"credits must be a number, got {usd!r}")
        self.balance_micro = round(usd * _MICRO)

    def settle(self, now: float | None = None) -> None:
        """Charge or count every job whose completion time has passed, in completion order."""
        now = self.now() if now is None else now
        due = self._due
        while due and due[0][0] <= now:
            _, _, job_id = heapq.heappop(due)
            job = self.jobs.get(job_id)
            if job is None or job.settled:
                continue
            job.settled = True
            if job.error is None:
                self.balance_micro -= job.price_micro
                self.charged_micro += job.price_micro
                self.counters["completed"] += 1
            else:
                self.counters["failed"] += 1

    # -- jobs ---------------------------------------------------------------------------------
    def draw_latency(self) -> float:
        mean = self.config.latency
        sigma = self.config.latency_sigma
        if mean <= 0:
            return 0.0
        if sigma <= 0:
            return self.config.scaled(mean)
        mu = math.log(mean) - sigma * sigma / 2  # keeps the mean at ``latency``
        return self.config.scaled(self._latency_rng.lognormvariate(mu, sigma))

    def create_job(self, slug: str, key: str, params: dict[str, Any], width: int, height: int) -> Job:
        now = self.now()
        self._prune(now)
        latency = self.draw_latency()
        error: str | None = None
        prompt = params.get("prompt", "")
        if isinstance(prompt, str) and FAIL_MARKER in prompt:
            error = "Request blocked by the content safety filter"
        elif self.faults.draw_failed():
            self.faults_injected["failed"] += 1
            error = "Inference failed: the model worker crashed while generating"
        job = Job(
            id=str(uuid.uuid4()),
            slug=slug,
            key=key,
            params=params,
            width=width,
            height=height,
            submitted=now,
            queued_until=now + latency * self.config.queue_fraction,
            done_at=now + latency,
            error=error,
            price_micro=round(self.config.price_for(slug) * _MICRO),
        )
        self.jobs[job.id] = job
        self._order.append(job)
        if self.files is not None and error is None:
            self.files.remember(job.file_name, FileRecord(
                str(prompt), params.get("seed"), width, height, self.wall_at(job.done_at),
                self.wall_at(now + self.config.scaled(self.config.file_retention))))
        self._seq += 1
        heapq.heappush(self._due, (job.done_at, self._seq, job.id))
        canonical = slug + "\x00" + canonical_json(params)
        if canonical in self._bodies:
            self.counters["duplicates"] += 1
        else:
            self._bodies.add(canonical)
        self.counters["submits_accepted"] += 1
        self.keys.counters(key)["submits_accepted"] += 1
        return job

    def _prune(self, now: float) -> None:
        """Forget jobs whose record and file have both expired, oldest first."""
        horizon = self.config.scaled(max(self.config.retention, self.config.file_retention))
        order = self._order
        while order and order[0].submitted + horizon < now and order[0].settled:
            self.jobs.pop(order.popleft().id, None)

    def record_expired(self, job: Job, now: float) -> bool:
        return now >= job.submitted + self.config.scaled(self.config.retention)

    def file_expired(self, job: Job, now: float) -> bool:
        return now >= job.submitted + self.config.scaled(self.config.file_retention)

    def earlier_file(self, file_name: str) -> FileRecord | None:
        """A file an earlier emulator on the same store completed and still serves, else None."""
        if self.files is None:
            return None
        kept = self.files.lookup(file_name)
        wall = time.time()
        if kept is None or not kept.done_wall <= wall < kept.gone_wall:
            return None
        return kept

    # -- counters -----------------------------------------------------------------------------
    def note_first_fetch(self, job: Job, now: float) -> None:
        """Remember how long a finished result waited for its reader: the cost of polling too rarely."""
        if job.first_fetch is None:
            job.first_fetch = now
            self.fetch_delays.append(max(0.0, now - job.done_at))

    def requests(self) -> list[dict[str, Any]]:
        """Every job still remembered, with what a reader could have seen of it.

        Lets a test compare the service's view (which results COMPLETED, which were ever read,
        which records have expired) with what the worker's ledger claims.
        """
        now = self.now()
        self.settle(now)
        return [
            {
                "request_id": j.id,
                "phase": j.phase(now),
                "prompt": j.params.get("prompt"),
                "fetched": j.first_fetch is not None,
                "record_expired": self.record_expired(j, now),
            }
            for j in self._order
        ]

    def _delay_summary(self) -> dict[str, float | int]:
        d = sorted(self.fetch_delays)
        if not d:
            return {"n": 0}
        return {"n": len(d), "median": round(d[len(d) // 2], 4), "p90": round(d[int(0.9 * (len(d) - 1))], 4)}

    def stats(self) -> dict[str, Any]:
        now = self.now()
        self.settle(now)
        c = self.counters
        accepted = c["submits_accepted"]
        return {
            "requests_total": c["requests_total"],
            "submit_requests": c["submit_requests"],
            "submits_accepted": accepted,
            "submits_rejected": dict(sorted(self.submits_rejected.items())),
            "lost_submit_answers": c["lost_submit_answers"],
            "status_polls": c["status_polls"],
            "result_fetches": c["result_fetches"],
            "credit_checks": c["credit_checks"],
            "history_requests": c["history_requests"],
            "downloads": c["downloads"],
            "truncated_downloads": c["truncated_downloads"],
            "duplicates": c["duplicates"],
            "in_flight": accepted - c["completed"] - c["failed"],
            "completed": c["completed"],
            "failed": c["failed"],
            "rate_limited": c["rate_limited"],
            "not_found": c["not_found"],
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "charged_usd": self.charged_micro / _MICRO,
            "ready_to_fetch_s": self._delay_summary(),
            "credits": self.balance,
        }
