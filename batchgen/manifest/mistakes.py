"""The mistakes of one manifest, gathered so that one run reports many of them, not one per run.

Fixing a manifest one mistake per run is slow when a prompts file has a dozen bad rows; printing a
million lines for a million bad rows helps nobody either. So the first ``MAX_SHOWN`` mistakes in
file order are kept (the manifest first, then each prompts file in the order it is named), the
rest only counted, and the same mistake found twice (a bad default met by every item) is one.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator

from .types import ManifestError, ManifestErrors

__all__ = ["MAX_SHOWN", "Mistakes"]

MAX_SHOWN = 20


class Mistakes:
    """Collects ManifestErrors; ``fail_fast`` raises the first at once (the fast path needs no more)."""

    def __init__(self, manifest: str, *, fail_fast: bool = False) -> None:
        self.fail_fast = fail_fast
        self.rank: dict[str, int] = {manifest: 0}
        self.shown: list[tuple[tuple[int, int, int], ManifestError]] = []
        self.seen: set[tuple[str, int | None, str | None, str]] = set()
        self.count = 0
        self.raised = False

    def file(self, shown: str) -> None:
        """A prompts file, ranked after the manifest and the files named before it."""
        self.rank.setdefault(shown, len(self.rank))

    def add(self, e: ManifestError) -> None:
        """Record ``e``; a final mistake ends the reading with everything found so far."""
        if self.fail_fast:
            raise e
        for one in e.errors:
            key = (one.path, one.line, one.field, one.message)
            if key in self.seen:
                continue
            self.seen.add(key)
            self.count += 1
            order = (self.rank.get(one.path, len(self.rank)), one.line or 0, self.count)
            if len(self.shown) < MAX_SHOWN or order < self.shown[-1][0]:
                bisect.insort(self.shown, (order, one), key=lambda t: t[0])
                del self.shown[MAX_SHOWN:]
        if e.final:
            self.raise_if_any()

    @contextlib.contextmanager
    def caught(self) -> Iterator[None]:
        """Record a mistake raised in the block and go on after it."""
        try:
            yield
        except ManifestError as e:
            if self.raised:
                raise
            self.add(e)

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self) -> None:
        """One mistake as itself (its message as before), several as one ManifestErrors."""
        if not self.count:
            return
        self.raised = True
        errors = [e for _, e in self.shown]
        if len(errors) == 1:
            raise errors[0]
        raise ManifestErrors(errors, self.count - len(errors))
