"""Shards: N processes splitting one manifest over one output folder, with no coordination.

Each item belongs to one shard (``store.shards.shard_of``); each shard keeps its own ledger and lock,
so shards never write the same file. What they share is held apart by locks that never wait on one
another: every shard holds ``.lock`` shared and its own ``.lock.shard-…`` exclusively, while an
unsharded run, ``ledger repair`` and ``reconcile --adopt`` hold ``.lock`` exclusively (so they never
run beside a shard). A folder run unsharded before keeps its ``ledger.jsonl``: each shard reads the
lines of its own items from it, read-only, before its own ledger, so nothing done there is paid again.

The index comes from ``--shard-index`` or, for the schedulers that start one process per index,
from ``JOB_COMPLETION_INDEX`` (Kubernetes Indexed Job) or ``AWS_BATCH_JOB_ARRAY_INDEX`` (AWS Batch
array job). Limits given for the folder or the key are split between shards (see ``shard_limits``).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from batchgen.core.errors import UserError
from batchgen.engine.config import RunConfig
from batchgen.store import ledger as L
from batchgen.store.files import open_nofollow
from batchgen.store.lock import output_lock
from batchgen.store.shards import (
    LEDGER,
    LOCK,
    Shard,
    ledger_name,
    lock_name,
    refuse_other_layout,
    shard_counts,
    shard_of,
)

__all__ = ["INDEX_VARIABLES", "folder_lock", "home_ledger", "ledgers_version", "replay_ledgers", "resolve_shard",
           "shard_limits"]

# Read in this order when --shard-count is given without --shard-index.
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


def resolve_shard(index: int | None, count: int | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard this process runs, or None for the whole manifest; raises UserError (exit 2).

    ``--shard-count 1`` is the whole manifest with the folder's plain ``ledger.jsonl``.
    """
    if count is None:
        if index is not None:
            raise UserError("--shard-index needs --shard-count (how many shards split the manifest)")
        return None
    if count < 1:
        raise UserError(f"--shard-count must be 1 or more, got {count}")
    source = "--shard-index"
    if index is None:
        for var in INDEX_VARIABLES:
            raw = environ.get(var, "").strip()
            if not raw:
                continue
            if not (raw.isascii() and raw.isdigit()):
                raise UserError(f"{var}={raw!r} is not a shard index (an integer, 0 or more)")
            index, source = int(raw), var
            break
        else:
            raise UserError(f"--shard-count {count} needs --shard-index, or {' or '.join(INDEX_VARIABLES)} "
                            "in the environment")
    if not 0 <= index < count:
        raise UserError(f"{source} {index} is out of range for --shard-count {count} (0 to {count - 1})")
    return None if count == 1 else Shard(index, count)


def shard_limits(cfg: RunConfig, shard: Shard | None, *, rpm_per_shard: bool = False) -> RunConfig:
    """A shard's part of limits that hold for the whole folder or key.

    ``rpm`` is the key's: N shards sharing a key take rpm/N each, unless ``rpm_per_shard`` says every
    shard has a key (and a limit) of its own. ``max_images`` and ``max_cost_usd`` are the folder's:
    each shard takes its share (the image shares add up to the total exactly), since no shard sees
    what the others spend. Concurrency is per process and stays as given.
    """
    if shard is None:
        return cfg
    n, i = shard.count, shard.index
    rpm = cfg.rpm if cfg.rpm is None or rpm_per_shard else cfg.rpm / n
    images = cfg.max_images
    if images is not None:
        images = images // n + (1 if i < images % n else 0)
    cost = None if cfg.max_cost_usd is None else math.floor(cfg.max_cost_usd / n * 1e6) / 1e6
    return replace(cfg, rpm=rpm, max_images=images, max_cost_usd=cost)


def replay_ledgers(out_dir: Path, shard: Shard | None) -> L.LedgerState:
    """The state a run of ``shard`` resumes from: its own ledger, after the lines of its items in
    the unsharded ``ledger.jsonl`` (older history) when the folder has one."""
    own = out_dir / ledger_name(shard)
    if shard is None:
        return L.replay(own)
    state = L.LedgerState()
    prior = out_dir / LEDGER
    if prior.is_file():
        for ev in L.readable_events(prior):
            item = ev.get("item")
            if isinstance(item, str) and shard.owns(item):
                L.apply(state, ev)
    return L.replay(own, into=state)


def ledgers_version(out_dir: Path, shard: Shard | None) -> object:
    """What changes whenever a ledger ``replay_ledgers`` reads does (see ``ledger.file_version``).
    An empty ledger counts as absent: the shard's lock creates its ledger empty."""

    def version(path: Path) -> tuple[int, int, int] | None:
        v = L.file_version(path)
        return None if v is None or v[1] == 0 else v

    own = version(out_dir / ledger_name(shard))
    return own if shard is None else (own, version(out_dir / LEDGER))


@contextlib.contextmanager
def folder_lock(out_dir: Path, shard: Shard | None) -> Iterator[None]:
    """What a run of ``shard`` holds while it writes; refuses (exit 3) while a run it cannot run
    beside holds the folder, and (exit 2) a folder split another way."""
    if shard is None:
        with output_lock(out_dir):
            refuse_other_layout(out_dir, None)  # no shard can start while this is held
            yield
        return
    with output_lock(out_dir, LOCK, shared=True), output_lock(out_dir, lock_name(shard), holder=str(shard)):
        _claim(out_dir, shard)
        yield


def _claim(out_dir: Path, shard: Shard) -> None:
    """Check the folder's layout and create this shard's ledger in one step that shards of
    another count starting at the same moment cannot interleave with (a lock held for microseconds)."""
    fd = open_nofollow(out_dir / f"{LOCK}.layout", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        refuse_other_layout(out_dir, shard)
        os.close(open_nofollow(out_dir / ledger_name(shard), os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    finally:
        os.close(fd)


def home_ledger(out_dir: Path) -> Callable[[str], Path]:
    """Where a line about an item goes when no run of it writes the line (``reconcile --adopt``):
    the ledger of its shard in a sharded folder, ``ledger.jsonl`` otherwise."""
    counts = shard_counts(out_dir)
    if not counts:
        return lambda item: out_dir / LEDGER
    if len(counts) > 1:
        have = " and ".join(map(str, sorted(counts)))
        raise UserError(f"{out_dir}: holds ledgers of {have} shards; which one an item belongs to is "
                        "unclear (move the ledgers of the count no longer run elsewhere)")
    n = counts.pop()
    return lambda item: out_dir / ledger_name(Shard(shard_of(item, n), n))
