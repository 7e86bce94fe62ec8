"""Stop control of one run: stop submitting, abort, interrupt, and the shields an interrupt shortens.

Three ways a run ends early, from gentle to hard: a *stop* (budget reached, credits gone) submits
nothing more but finishes what is paid for; an *abort* (a fatal answer, a full disk) cancels every
stage at once; an *interrupt* (SIGINT, SIGTERM) stops like an abort but gives requests that must
not be cut in two (a POST and its request_id) a short grace. A second interrupt ends the grace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["Pulse", "StopControl"]


class Pulse:
    """Wakes every task waiting for the run to change (a slot freed, an item requeued, a stop)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class StopControl:
    def __init__(self, changed: Pulse, grace_s: float) -> None:
        self._changed = changed
        self.grace_s = grace_s
        self.stop_reason: str | None = None  # stop submitting; finish what is in flight
        self.abort_reason: str | None = None  # stop everything now
        self.interrupted = False
        self._scope: anyio.CancelScope | None = None
        self._shields: set[anyio.CancelScope] = set()

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def stop_submitting(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._changed.fire()

    def abort(self, reason: str) -> None:
        """A fatal answer: everything stops now; in-flight request_ids are already in the ledger."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.stop_submitting(reason)
        if self._scope is not None:
            self._scope.cancel()

    def interrupt(self) -> None:
        """First interrupt: stop, cancel the stages, give shielded requests ``grace_s`` to finish."""
        self.interrupted = True
        self.stop_submitting("interrupted")
        deadline = anyio.current_time() + self.grace_s
        for shield in list(self._shields):
            shield.deadline = min(shield.deadline, deadline)
        if self._scope is not None:
            self._scope.cancel()

    def end_grace(self) -> None:
        """Second interrupt: shielded requests are cut now too."""
        for shield in list(self._shields):
            shield.cancel()

    @contextmanager
    def cancellable(self) -> Iterator[anyio.CancelScope]:
        """The scope the stages run in: an abort or an interrupt cancels it."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                yield scope
            finally:
                self._scope = None

    @contextmanager
    def shielded(self) -> Iterator[anyio.CancelScope]:
        """Shields a request from cancellation, except for an interrupt's grace; check ``cancelled_caught``."""
        with anyio.CancelScope(shield=True) as shield:
            self._shields.add(shield)
            try:
                if self.interrupted:
                    shield.deadline = anyio.current_time() + self.grace_s
                yield shield
            finally:
                self._shields.discard(shield)
