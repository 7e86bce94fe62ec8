"""The cyclic garbage collector held off while a large structure is built that is not garbage.

Loading a manifest or replaying a ledger allocates a few objects per item and frees almost none.
Left on, the collector rescans the growing structure again and again: about a third of the load
time of a large manifest. Both happen once, before a run starts.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (reference counting still frees as usual)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
