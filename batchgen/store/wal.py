"""The ledger of an object-store output: a local write-ahead file, uploaded as immutable segments.

Object stores cannot append. A run writes its ledger lines exactly as to a local ledger (flushed per
line, fsync'd each second) into ``<cache>/wal/<ledger name>/current.jsonl``. Every few seconds, or
after a number of lines, and at the end of the run, the file is rotated: renamed to its segment name
(``seg-<n>-<writer>.jsonl``, the number fixed before the upload) and uploaded under
``ledgers/<ledger name>/``, then deleted. A rotated file that was not uploaded (a SIGKILL, a store
that did not answer) is uploaded under the same name by the next start, so an upload is never
duplicated; a ``current.jsonl`` left behind is rotated and uploaded before anything else.

What a SIGKILL can cost: nothing while the local disk survives (the next start on it uploads the
rest). If the disk is lost too (a pod evicted with its emptyDir), the lines since the last upload
are lost: at most ``interval`` seconds or ``every`` lines. The request history covers them: a lost
``submitted`` line leaves an ``intent`` whose request is found by its body, a lost ``completed``
line a ``submitted`` one read again by id; nothing is paid for twice.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from batchgen.core.errors import ExitCode, UserError
from batchgen.store.ledger import Ledger, LedgerState, open_for_append
from batchgen.store.objstore import ObjectStorage, _order, segment_name
from batchgen.store.storage import fsync_dir

__all__ = ["WalLedger", "new_writer", "upload_loop", "upload_pending"]

CURRENT = "current.jsonl"


def new_writer() -> str:
    """A run's own mark in its segment names: two runs never write the same segment."""
    return secrets.token_hex(4)


def wal_dir(work_dir: Path, ledger: str) -> Path:
    return work_dir / "wal" / ledger


def upload_pending(storage: ObjectStorage, ledger: str, folder: Path, writer: str, *, leftover: bool = True) -> int:
    """Upload what a ledger's write-ahead folder holds: rotated segments under their own names, and
    (``leftover``: at start, before the run writes) a ``current.jsonl`` a killed run left, its torn
    last line dropped, as a new segment. Returns how many segments went up. The caller holds the
    output's lease."""
    if not folder.is_dir():
        return 0
    sent = 0
    current = folder / CURRENT
    if leftover and current.is_file() and current.stat().st_size:
        data = current.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        if data:
            local = [o[0] for p in folder.iterdir() if (o := _order(p.name)) is not None]
            name = segment_name(max(storage.next_number(ledger), 1 + max(local, default=0)), writer)
            _write(folder / name, data)
        current.unlink()
    pending = sorted((o, p) for p in folder.iterdir() if (o := _order(p.name)) is not None)
    if leftover and pending:
        pending = _behind(storage, ledger, folder, writer, pending)
    cache = storage.segment_cache(ledger) if pending else folder
    for _, p in pending:
        data = p.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        storage.put_segment(ledger, p.name, data)
        if len(data) == p.stat().st_size:
            os.replace(p, cache / p.name)  # kept as the copy a reader of the ledger would fetch
        else:
            p.unlink()
        sent += 1
    return sent


def _behind(storage: ObjectStorage, ledger: str, folder: Path, writer: str,
            pending: list[tuple[tuple[int, int, str], Path]]) -> list[tuple[tuple[int, int, str], Path]]:
    """Segments a killed (or cut-off) run of this machine left unsent, while runs elsewhere went on:
    one numbered at or below what the store already holds would be hidden by a later ``base``, or
    replayed among lines written after it. It goes up under the next free number instead, unless
    it already went up before the run stopped (its name is listed, or its lines are in the base
    that folded it)."""
    keys = storage.segments(ledger)  # at most one base among them: the one that hides the rest
    listed = {k.rsplit("/", 1)[-1]: k for k in keys}
    number = storage.next_number(ledger)
    base_key, base_top = next(((k, o[0]) for n, k in listed.items() if (o := _order(n)) and o[1] == 0), (None, 0))
    base: bytes | None = None
    kept: list[tuple[tuple[int, int, str], Path]] = []
    for order, path in pending:
        if path.name in listed or order[0] >= number:
            kept.append((order, path))
            continue
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        if base_key is not None and order[0] <= base_top:
            if base is None:
                base = storage.call("reading a ledger segment", storage.fs.cat_file, base_key)
            if data in base:
                path.unlink()  # folded in already: uploaded just before its run stopped
                continue
        moved = folder / segment_name(number, writer)
        os.replace(path, moved)
        kept.append(((number, 1, writer), moved))
        number += 1
    fsync_dir(folder)
    return sorted(kept)


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)


class WalLedger(Ledger):
    """A ``Ledger`` writing to the local write-ahead file of one ledger of an object-store output."""

    def __init__(self, storage: ObjectStorage, ledger: str, state: LedgerState, *, writer: str,
                 fsync_interval: float = 1.0, fold_every: int = 1000) -> None:
        """``fold_every``: segments uploaded between two folds of the ledger into one object."""
        folder = wal_dir(storage.work_dir, ledger)
        folder.mkdir(parents=True, exist_ok=True)
        # ``path`` is the local copy of the whole ledger as it stood at the start (what a scan for an
        # earlier run's intents reads); lines go to the write-ahead file ``wal``.
        super().__init__(storage.work_dir / ledger, fsync_interval, state=state)
        self.wal = folder / CURRENT
        self.storage = storage
        self.ledger = ledger
        self.writer = writer
        self.folder = folder
        self.next_number = storage.next_number(ledger)
        self._rotated_at = state.lines
        self._lock: anyio.Lock | None = None
        self.fold_every = fold_every
        self._since_fold = 0
        self.guard: Callable[[], None] = lambda: None  # raises once the run's lease is lost

    def open(self) -> None:
        # The write-ahead file starts empty (what a killed run left was uploaded before this run).
        self.state.torn_tail = False
        self._f = open_for_append(self.wal)

    @property
    def unsent(self) -> int:
        """Lines written since the last rotation."""
        return self.state.lines - self._rotated_at

    async def upload(self) -> None:
        """Rotate and upload now (one at a time; the caller's lines since are in the next segment)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            self.guard()
            self.rotate()
            sent = await anyio.to_thread.run_sync(
                lambda: upload_pending(self.storage, self.ledger, self.folder, self.writer, leftover=False))
            self._since_fold += sent
            if self._since_fold >= self.fold_every:
                # A long run (one segment per submit) folded as it goes, so a reader starting cold
                # fetches a few objects, not one per submit. Under the lock: nothing goes up meanwhile.
                with contextlib.suppress(OSError):
                    await anyio.to_thread.run_sync(self.storage.compact, self.ledger)
                self._since_fold = 0

    async def barrier(self) -> str | None:
        """Every line written so far is in the store when this returns: called between an ``intent``
        and its POST, so that no lost local disk can hide a submit that may have been paid for
        (the request history finds it by its body). An upload that fails leaves the line in the
        local file (a SIGKILL that spares the disk loses nothing) and the POST goes ahead. Returns
        why the POST must not go ahead at all: the run's lease was taken over by another run."""
        try:
            await self.upload()
        except OSError:
            pass
        except UserError as e:
            return str(e)
        return None

    def rotate(self) -> bool:
        """Close the current file under its segment name and start a new one; False when empty."""
        if self._f is None or self.unsent == 0:
            return False
        self.sync()
        self._f.close()
        self._f = None
        os.replace(self.wal, self.folder / segment_name(self.next_number, self.writer))
        fsync_dir(self.folder)
        self.next_number += 1
        self._rotated_at = self.state.lines
        self._f = open_for_append(self.wal)
        return True


async def upload_loop(ledger: WalLedger, *, interval: float = 2.0, every: int = 500,
                      clock: Callable[[], float] = time.monotonic,
                      warn: Callable[[str], None] = lambda _m: None) -> None:
    """Rotate and upload every ``interval`` seconds (or ``every`` lines), until cancelled. A store
    that fails is tried again each tick (the lines wait safely in the local file), with one warning.
    ``ledger.guard`` raises when the run no longer holds its lease: nothing is uploaded then."""
    last = clock()
    warned = False
    while True:
        await anyio.sleep(0.1)
        if ledger.unsent == 0 or (ledger.unsent < every and clock() - last < interval):
            continue
        try:
            await ledger.upload()
            warned = False
        except UserError:
            return  # the lease is lost: nothing more goes up (the next POST stops the run)
        except OSError as e:
            if not warned:
                warn(f"cannot upload the ledger now ({e}); its lines are kept in {ledger.folder} and tried again")
                warned = True
        last = clock()


def final_upload(ledger: WalLedger) -> None:
    """At the end of a run: everything up, or one line saying where the lines wait (exit 3)."""
    with contextlib.suppress(OSError):
        ledger.sync()
    ledger.guard()
    ledger.rotate()
    try:
        upload_pending(ledger.storage, ledger.ledger, ledger.folder, ledger.writer, leftover=False)
    except OSError as e:
        raise UserError(f"cannot upload the ledger ({e}); its last lines are kept in {ledger.folder} "
                        "and uploaded by the next run from this machine", ExitCode.ABORTED) from None
    # One object for the next reader instead of one per upload; a failure here loses nothing.
    with contextlib.suppress(OSError):
        ledger.storage.compact(ledger.ledger)
