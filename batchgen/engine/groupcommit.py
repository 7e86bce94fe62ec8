"""Storing verified images in groups: one thread hop and one folder fsync for every image that is
ready at the same moment, instead of one each.

Why: at zero latency the thread hop of each image's fsync-and-rename was the largest single CPU
cost of a run (the event loop's thread and the worker's trading the GIL). The rule is unchanged
for every file: its bytes are fsync'd before it is renamed to its final name, and its folder is
fsync'd before its ``downloaded`` line is written, so a file under its final name is complete after
a power cut and a ledger line never names a file that a power cut could take back. Only the
waiting is shared: an image that becomes ready while a group is being stored goes with the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from batchgen.store.storage import commit_files

__all__ = ["GroupCommit"]


@dataclass
class _Pending:
    f: Any
    tmp: Path
    final: Path
    done: bool = False
    error: OSError | None = None


class GroupCommit:
    """``await commit(f, tmp, final)``: stored durably under ``final`` on return (OSError otherwise).

    Callers queue, and whoever holds the lock stores everything queued so far in one thread call;
    a caller whose file went with an earlier group returns without a hop of its own. ``run_group``
    (``store.storage.commit_files`` by default) is the blocking part, replaceable in tests."""

    def __init__(self, run_group: Callable[[Sequence[tuple[Any, Path, Path]]], list[OSError | None]] = commit_files
                 ) -> None:
        self._run_group = run_group
        self._queue: list[_Pending] = []
        self._lock = anyio.Lock()
        self.groups = 0  # thread calls made (diagnostics and tests)

    async def __call__(self, f: Any, tmp: Path, final: Path) -> None:
        mine = _Pending(f, tmp, final)
        self._queue.append(mine)
        # Shielded: a cancelled wait would not stop the thread, and a file would reach its final
        # name with no ledger line saying so.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if not mine.done:
                    group, self._queue = self._queue, []
                    self.groups += 1
                    try:
                        results = await anyio.to_thread.run_sync(
                            self._run_group, [(p.f, p.tmp, p.final) for p in group])
                        if len(results) != len(group):
                            raise RuntimeError(f"{len(results)} results for {len(group)} images")
                    except Exception as e:  # every file of the group fails alike: none is left waiting
                        err = e if isinstance(e, OSError) else OSError(f"storing the image failed: {e}")
                        results = [err] * len(group)
                    for p, error in zip(group, results, strict=True):
                        p.done, p.error = True, error
        if mine.error is not None:
            raise mine.error
