"""Live progress: one redrawn line on a terminal, plain periodic lines anywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import anyio

from batchgen.engine.context import Run

__all__ = ["Progress"]


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
        self.run: Run | None = None
        self._t0 = time.monotonic()
        self._drawn = False
        self._done_before = 0

    def attach(self, run: Run) -> None:
        self.run = run
        self._t0 = time.monotonic()
        states = run.ledger.state.items
        self._done_before = sum(1 for it in run.items if (st := states.get(it.id)) and st.state == "downloaded")

    def line(self) -> str:
        run = self.run
        if run is None:
            return "starting"
        c = run.counts
        total = len(run.items)
        done = self._done_before + c["downloaded"]
        elapsed = max(1e-6, time.monotonic() - self._t0)
        rate = c["downloaded"] / elapsed * 60
        left = total - done - c["failed"]
        eta = left / (rate / 60) if rate > 0 else float("inf")
        return (
            f"done {done}/{total} · in flight {run.in_flight + run.submitting} · failed {c['failed']} · "
            f"{rate:.1f} img/min · ETA {_eta(eta)} · ${run.spent_estimate():.2f}"
            + (f" · 429s {run.limiter.rate_limited}" if run.limiter.rate_limited else "")
        )

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
            if self.run is not None:
                self.draw()
