"""Waiting for a wake-up with a time limit, without the event loop spinning.

Why not ``anyio.move_on_after``: under uvloop (which ``batchgen run`` uses when installed) a loop
timer fires up to a millisecond before its time, and anyio re-arms a scope's deadline timer at
once whenever it finds the deadline not yet passed; the loop then runs that timer again on every
pass until its clock moves on. Measured: about 440 timer runs and 0.9 ms of CPU for one wait,
where the stages wait thousands of times a run (the poller after every answer). Here one timer
sets the event; a wake-up a moment early just sends the caller round its loop once more, and a
remainder under ``MIN_WAIT_S`` is waited as ``MIN_WAIT_S`` so that round cannot spin either.
"""

from __future__ import annotations

import asyncio
import math

import anyio

__all__ = ["MIN_WAIT_S", "wait_event"]

MIN_WAIT_S = 0.002  # a loop timer's granularity is a millisecond; below that, waiting is spinning


def _expire(event: anyio.Event) -> None:
    event.set()


async def wait_event(event: anyio.Event, timeout: float) -> None:  # noqa: ASYNC109 - see the module
    """Return when ``event`` is set or after about ``timeout`` seconds (``math.inf``: only the
    event), whichever comes first; the caller looks again at what it waits for either way. The
    timer is cancelled on return, so it never sets the event later."""
    if event.is_set():
        return
    if timeout == math.inf:
        await event.wait()
        return
    handle = asyncio.get_running_loop().call_later(max(timeout, MIN_WAIT_S), _expire, event)
    try:
        await event.wait()
    finally:
        handle.cancel()
