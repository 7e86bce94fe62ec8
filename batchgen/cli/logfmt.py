"""``--log-format json``: one JSON object per line on stderr, for log collectors.

Every line a person would read (progress, warnings, errors, the summary) becomes an object with
``ts``, ``level`` and ``event``, so a collector can alert on ``level == "error"`` without regexes.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

import anyio

from batchgen.store.ledger import utc_now

__all__ = ["JsonLog", "JsonProgress"]


class JsonLog:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        obj = {"ts": utc_now(), "level": level, "event": event, **fields}
        self.stream.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        if message.startswith("warning: "):
            self.emit("warning", "warning", message=message[len("warning: ") :])
        else:
            self.emit("info", message=message)

    def error(self, message: str) -> None:
        self.emit("error", "error", message=message)


class JsonProgress:
    """Same interface as ``progress.Progress``; numbers instead of a sentence."""

    def __init__(self, log: JsonLog, interval: float = 30.0) -> None:
        self.log = log
        self.interval = interval
        self.run: Any = None
        self._t0 = time.monotonic()

    def attach(self, run: Any) -> None:
        self.run = run
        self._t0 = time.monotonic()

    def draw(self) -> None:
        run = self.run
        if run is None:
            return
        c = run.counts
        states = run.ledger.state.items
        done = sum(1 for it in run.items if (st := states.get(it.id)) and st.state == "downloaded")
        elapsed = max(1e-6, time.monotonic() - self._t0)
        self.log.emit(
            "progress",
            done=done,
            items=len(run.items),
            in_flight=run.in_flight + run.submitting,
            failed=c["failed"],
            per_min=round(c["downloaded"] / elapsed * 60, 2),
            spent_usd=round(run.spent_estimate(), 4),
            rate_limited=run.limiter.rate_limited,
        )

    def clear(self) -> None:
        pass

    async def loop(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            self.draw()
