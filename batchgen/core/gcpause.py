"""The cyclic garbage collector held off while a large structure is built that is not garbage.

Loading a manifest or replaying a ledger allocates a few objects per item and frees almost none.
Left on, the collector rescans the growing structure again and again: about a third of the load
time of a large manifest. Both happen once, before a run starts.

What the block built is then handed to the oldest generation at once (``gc.freeze`` then
``gc.unfreeze``: two list splices, no scan). Left among the young, the first collections after
the block would each walk all of it before promoting it: 0.15 s of a 100k-item resume's 3.5 s.
It is still collected as usual by a full collection, when it becomes garbage.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (reference counting still frees as usual); what
    survives it is moved to the oldest generation, unscanned."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # every tracked object, young or old, to the permanent generation...
        gc.unfreeze()  # ...and from there to the oldest one: collectable again, never rescanned young
        if was_enabled:
            gc.enable()
