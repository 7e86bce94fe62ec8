"""``--log-format json``: one JSON object per line on stderr, for log collectors.

Every line a person would read (progress, warnings, errors, the summary) becomes an object with
``ts``, ``level`` and ``event``, so a collector can alert on ``level == "error"`` without regexes.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import anyio

from batchgen.engine.counters import SnapshotSource
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
        for line in message.split("\n"):  # a manifest's mistakes: one object each, as in text
            self.emit("error", "error", message=line)


class JsonProgress:
    """A ``progress.ProgressDisplay``: numbers instead of a sentence."""

    def __init__(self, log: JsonLog, interval: float = 30.0) -> None:
        self.log = log
        self.interval = interval
        self.source: SnapshotSource | None = None

    def attach(self, source: SnapshotSource) -> None:
        self.source = source

    def draw(self) -> None:
        if self.source is None:
            return
        s = self.source()
        self.log.emit(
            "progress",
            done=s.done,
            items=s.items,
            in_flight=s.in_flight,
            failed=s.failed,
            per_min=round(s.per_min, 2),
            spent_usd=round(s.spent_usd, 4),
            rate_limited=s.rate_limited,
        )

    def clear(self) -> None:
        pass

    async def loop(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            self.draw()
