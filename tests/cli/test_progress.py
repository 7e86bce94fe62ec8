"""Progress displays: both read only a run's Snapshot and draw the same numbers, as a line or as JSON."""

from __future__ import annotations

import io
import json

from batchgen.cli.logfmt import JsonLog, JsonProgress
from batchgen.cli.progress import Progress
from batchgen.engine.counters import Snapshot

SNAP = Snapshot(items=100, done=40, downloaded=30, failed=4, in_flight=12, spent_usd=2.5, per_min=12.0, rate_limited=0)


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_shows_counts_rate_eta_and_spend() -> None:
    p = Progress(io.StringIO(), live=False)
    assert p.line() == "starting"
    p.attach(lambda: SNAP)
    # 56 left at 12 a minute: 4 min 40 s
    assert p.line() == "done 40/100 · in flight 12 · failed 4 · 12.0 img/min · ETA 4m40s · $2.50"


def test_429s_show_only_once_there_are_some_and_eta_is_unknown_before_the_first_image() -> None:
    p = Progress(io.StringIO(), live=False)
    p.attach(lambda: Snapshot(items=5, done=0, downloaded=0, failed=0, in_flight=5, spent_usd=0.0, per_min=0.0,
                              rate_limited=3))
    assert p.line() == "done 0/5 · in flight 5 · failed 0 · 0.0 img/min · ETA ? · $0.00 · 429s 3"


def test_a_terminal_gets_one_redrawn_line_that_clear_removes() -> None:
    out = TTY()
    p = Progress(out)
    p.attach(lambda: SNAP)
    p.draw()
    p.draw()
    p.clear()
    assert out.getvalue().count("\r\x1b[K") == 3 and "\n" not in out.getvalue()


def test_anywhere_else_gets_plain_lines() -> None:
    out = io.StringIO()
    p = Progress(out, live=False)
    p.attach(lambda: SNAP)
    p.draw()
    p.clear()
    assert out.getvalue() == p.line() + "\n"


def test_json_progress_emits_the_same_numbers() -> None:
    out = io.StringIO()
    p = JsonProgress(JsonLog(out))
    p.draw()  # not attached yet: nothing to say
    p.attach(lambda: SNAP)
    p.draw()
    (line,) = out.getvalue().splitlines()
    obj = json.loads(line)
    assert obj["event"] == "progress" and obj["level"] == "info"
    assert {k: obj[k] for k in ("done", "items", "in_flight", "failed", "per_min", "spent_usd", "rate_limited")} == {
        "done": 40, "items": 100, "in_flight": 12, "failed": 4, "per_min": 12.0, "spent_usd": 2.5, "rate_limited": 0,
    }

