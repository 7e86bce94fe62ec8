"""What the emulator knows per API key: revoked keys and what each key asked.

The real service answers a key about its own requests only, and a key can be revoked while a run
goes on; a test of a key pool needs both, and needs to see which key made which request. These
counters are for tests in the same process: ``/_sandbox/stats`` never shows a key.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["KeyBook"]


class KeyBook:
    """Per key: requests by kind (``submit``, ``status``, ``result``, ``credits``, ``history``),
    ``submits_accepted``, ``rate_limited`` and ``foreign`` (about another key's request: 404)."""

    def __init__(self) -> None:
        self.by_key: dict[str, Counter[str]] = {}
        self.revoked: set[str] = set()

    def counters(self, key: str) -> Counter[str]:
        return self.by_key.setdefault(key, Counter())

    def revoke(self, key: str) -> None:
        """Every request with ``key`` is answered 401 from now on, as after a revocation mid-run."""
        self.revoked.add(key)

    def stats(self, key: str) -> dict[str, int]:
        return dict(self.counters(key))
