"""Live progress: one redrawn line on a terminal, plain periodic lines anywhere else.

Both displays (``Progress`` here, ``JsonProgress`` for ``--log-format json``) follow
``ProgressDisplay`` and read only the run's ``Snapshot``: numbers, never the run itself.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

import anyio

from batchgen.engine.counters import Snapshot, SnapshotSource

__all__ = ["Progress", "ProgressDisplay"]


class ProgressDisplay(Protocol):
    """What the command line asks of a progress display over the life of one run."""

    def attach(self, source: SnapshotSource) -> None:
        """The run has started; ``source()`` gives its numbers whenever the display draws."""
        ...

    async def loop(self) -> None:
        """Draw periodically until cancelled; draws nothing before ``attach``."""
        ...

    def clear(self) -> None:
        """Remove whatever a live display left on the terminal, before the summary prints."""
        ...


def _eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None, interval: float | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.interval = interval if interval is not None else (0.5 if self.live else 30.0)
        self.source: SnapshotSource | None = None
        self._drawn = False

    def attach(self, source: SnapshotSource) -> None:
        self.source = source

    def line(self) -> str:
        if self.source is None:
            return "starting"
        return format_line(self.source())

    def draw(self) -> None:
        text = self.line()
        if self.live:
            self.stream.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    async def loop(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            if self.source is not None:
                self.draw()


def format_line(s: Snapshot) -> str:
    left = s.items - s.done - s.failed
    eta = left / (s.per_min / 60) if s.per_min > 0 else float("inf")
    return (
        f"done {s.done}/{s.items} · in flight {s.in_flight} · failed {s.failed} · "
        f"{s.per_min:.1f} img/min · ETA {_eta(eta)} · ${s.spent_usd:.2f}"
        + (f" · 429s {s.rate_limited}" if s.rate_limited else "")
    )
