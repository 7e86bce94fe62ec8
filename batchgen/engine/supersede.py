"""An item's earlier image, made from parameters since edited, is kept under another name.

Done when the new image is about to be stored, not when the run starts: a run that stops early (a
budget, an interrupt) leaves every edited item it did not reach with its earlier image in place.
The earlier image becomes ``images/<id>~superseded-<params sha>.<ext>`` (``~`` never appears in an
id, so the name cannot be another item's) and a ``superseded`` line records it, so status, exports
and the report show the new image and know where the old one went.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from batchgen.engine.context import Job, Run
from batchgen.store.events import EventKind
from batchgen.store.storage import superseded_rel

__all__ = ["keep_superseded", "superseded_name"]


def superseded_name(path: Path, item_id: str, params_sha: str) -> Path:
    """A free name beside ``path`` for the image of ``item_id`` made from the parameters ``params_sha``."""
    base = f"{item_id}~superseded-{params_sha[:8]}"
    for n in itertools.count(1):
        candidate = path.with_name(f"{base}{'' if n == 1 else f'-{n}'}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise AssertionError("unreachable")


def keep_superseded(run: Run, job: Job) -> bool:
    """Before a new image of ``job``'s item is stored: move the one made from other parameters aside.

    Returns False when that failed; the item has then failed retryably (its output URL is in the
    ledger, so the next run fetches it for free) and nothing may be stored over the earlier image.
    The file is renamed before the line is written: a crash in between leaves the old image under
    its new name, unrecorded, rather than overwritten. A file the ledger names outside the output
    folder is never touched.
    """
    item_id = job.item.id
    st = run.ledger.state.items.get(item_id)
    if st is None or not st.file or st.file_params_sha is None or st.params_sha is None:
        return True
    if st.file_params_sha == st.params_sha:
        return True  # the same parameters: a missing or damaged file fetched again, not a new image
    try:
        target = run.storage.move_aside(st.file, item_id, st.file_params_sha)
    except OSError as e:
        url = job.output_url or ""
        name = superseded_rel(st.file, item_id, st.file_params_sha, lambda _rel: False).rpartition("/")[2]
        run.on_failed(job, "download", f"cannot keep the earlier image {st.file} as {name}: "
                      f"{e.strerror or e} (the output URL is recorded: the next run downloads it again)",
                      retryable=True, output_url=url if url.startswith("http") else None)
        return False
    if target is None:
        return True
    run.record(
        EventKind.SUPERSEDED,
        item_id,
        file=target,
        was=st.file,
        params_sha=st.file_params_sha,
        sha256=st.sha256,
        bytes=st.bytes,
    )
    return True
