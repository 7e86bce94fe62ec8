"""A scripted request history and a run wired to it, for the recovery tests (no socket)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from batchgen.api.outcomes import HistoryOutcome, HistoryPage, HistoryRow
from batchgen.engine.config import RecoveryPolicy
from batchgen.engine.context import Job, Run
from batchgen.engine.recover import Recovery
from tests.engine.fakes import WALL_OFFSET, FakeClient, make_run
from tests.support.sandbox import FakeClock

# No waiting between questions: the decisions, not the pauses, are under test.
QUICK = RecoveryPolicy(first_recheck_s=0.0, landing_wait_s=60.0, expired_wait_s=600.0, patience_s=300.0)


def at(clock_t: float) -> datetime:
    """The wall time of the run's clock instant ``clock_t`` (the fakes' wall is the clock shifted)."""
    return datetime.fromtimestamp(WALL_OFFSET + clock_t, UTC)


def row(rid: str, body: dict[str, Any] | None, created: float, status: str | None = "COMPLETED",
        **more: Any) -> HistoryRow:
    """A landed row; COMPLETED ones carry a URL and a cost unless told otherwise."""
    if status == "COMPLETED":
        more = {"generation_url": f"https://files.example/{rid}.png", "cost_usd": 0.5, **more}
    return HistoryRow(rid, status=status, model_name="test-model", request_body=body, created=at(created), **more)


@dataclass
class FakeHistory:
    """``get`` answers from a script per id (the last answer repeats); ``list_page`` serves ``rows``
    newest first, or a scripted failure from ``list_failures`` first."""

    by_id: dict[str, deque[HistoryOutcome]] = field(default_factory=dict)
    rows: list[HistoryRow] = field(default_factory=list)
    list_failures: deque[HistoryOutcome] = field(default_factory=deque)
    probe: HistoryOutcome | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    per_page: int | None = None  # smaller pages than asked, to see paging

    def script(self, rid: str, *answers: HistoryOutcome) -> None:
        self.by_id[rid] = deque(answers)

    async def get(self, request_id: str) -> HistoryOutcome:
        self.calls.append(("get", request_id))
        answers = self.by_id[request_id]
        return answers.popleft() if len(answers) > 1 else answers[0]

    async def list_page(self, *, page: int = 1, per_page: int = 100, from_date: date | None = None,
                        to_date: date | None = None, model_name: str | None = None, status: str | None = None,
                        sort_by: str = "model_created", sort_order: str = "asc") -> HistoryOutcome:
        self.calls.append(("list", {"page": page, "from": from_date, "to": to_date, "model": model_name,
                                    "order": sort_order}))
        if per_page == 1 and self.probe is not None:
            return self.probe
        if self.list_failures:
            return self.list_failures.popleft()
        size = self.per_page or per_page
        ordered = sorted(self.rows, key=lambda r: r.created or at(0), reverse=sort_order == "desc")
        return HistoryPage(tuple(ordered[(page - 1) * size : page * size]), page, size, len(ordered))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


class Rig:
    """A run with a recovery over a ``FakeHistory``; what it hands on lands in ``polled``/``downloads``."""

    def __init__(self, run: Run, recovery: Recovery, history: FakeHistory,
                 polls: MemoryObjectReceiveStream[Job], downloads: MemoryObjectReceiveStream[Job]) -> None:
        self.run, self.recovery, self.history = run, recovery, history
        self._polls, self._downloads = polls, downloads
        self.warnings: list[str] = []

    @staticmethod
    def _drain(stream: MemoryObjectReceiveStream[Job]) -> list[Job]:
        out = []
        while True:
            try:
                out.append(stream.receive_nowait())
            except anyio.WouldBlock:
                return out

    def polled(self) -> list[Job]:
        return self._drain(self._polls)

    def downloads(self) -> list[Job]:
        return self._drain(self._downloads)


def rig(folder: Path, clock: FakeClock, history: FakeHistory, items: Iterable[Any] = (), *,
        available: bool | None = True, **cfg: Any) -> Rig:
    run = make_run(folder, FakeClient(), clock, list(items), **{"recovery": QUICK, **cfg})
    warnings: list[str] = []
    recovery = Recovery(run, history, warn=warnings.append)
    run.recovery = recovery
    poll_send, poll_recv = anyio.create_memory_object_stream[Job](math.inf)
    dl_send, dl_recv = anyio.create_memory_object_stream[Job](math.inf)
    recovery.bind(poll_send, dl_send)
    if available is not None:
        recovery.access.available = available
        recovery.access.decided.set()
    r = Rig(run, recovery, history, poll_recv, dl_recv)
    r.warnings = warnings
    return r
