"""An output, local or in object storage, as each command needs it: the storage a run writes
through, the lock or lease it holds, the ledger it appends to, and the local copy readers read.

The composition root of a run (``app.runner``) and the reading commands call these; nothing below
``app`` knows whether an output is a folder or a bucket beyond the ``store.storage.Storage`` it gets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from batchgen.core.errors import ExitCode, UserError
from batchgen.store import ledger as L
from batchgen.store.filecheck import OutputFiles
from batchgen.store.lease import DEFAULT_TTL_S, hold_lease, read_lease
from batchgen.store.location import SCHEMES, RemoteOutput, cache_root, failure, open_filesystem, parse_output
from batchgen.store.lock import lock_holder
from batchgen.store.objstore import ObjectStorage
from batchgen.store.shards import LOCK, Shard, ledger_name, lock_name
from batchgen.store.storage import FileChecks, LocalStorage, Storage
from batchgen.store.wal import WalLedger, final_upload, new_writer, upload_loop, upload_pending, wal_dir

__all__ = ["Output", "ReadView", "hold_output", "manifest_output", "open_output", "open_view", "parse_output",
           "run_ledger", "run_uploading"]

Output = Path | RemoteOutput
T = TypeVar("T")


def manifest_output(path: Path) -> Output:
    """A manifest's ``output`` as written: a folder, or an object store's URL (``output:
    s3://bucket/prefix``), which the manifest keeps as a path with its ``//`` folded to ``/``."""
    parts = path.parts
    if len(parts) >= 2 and parts[0].endswith(":") and parts[0][:-1].lower() in (*SCHEMES, "file"):
        scheme, rest = parts[0][:-1], "/".join(parts[1:])
        return parse_output(f"{scheme}:///{rest}" if scheme.lower() == "file" else f"{scheme}://{rest}")
    return path


def open_output(out: Output, cache_dir: Path | None = None) -> Storage:
    """The storage of an output; an object store is checked at once (bucket, credentials, endpoint):
    any problem is one line and exit 2, before anything is sent."""
    if isinstance(out, Path):
        return LocalStorage(out)
    fs = open_filesystem(out)
    try:
        fs.info(out.bucket)
    except FileNotFoundError:
        raise UserError(f"{out.url}: bucket {out.bucket!r} does not exist (create it first)") from None
    except Exception as e:
        raise failure(out, e) from None
    work = cache_root(out, cache_dir)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{work}: the cache folder of {out.url} is not writable: {e.strerror or e}") from None
    return ObjectStorage(out, fs, work)


def sync(storage: Storage) -> None:
    """Refresh the local copies of an object store's ledgers (nothing to do for a folder)."""
    if isinstance(storage, ObjectStorage):
        try:
            storage.sync_view()
        except OSError as e:
            raise UserError(str(e)) from None


@contextlib.contextmanager
def hold_output(storage: Storage, shard: Shard | None, *, folder_lock: Any,
                lease_ttl: float = DEFAULT_TTL_S, writer: str = "") -> Iterator[Callable[[], None]]:
    """What a run holds while it writes: the folder's lock (``folder_lock``, from ``app.shards``), or
    the output's lease. On an object store, the ledger lines a killed run left in this machine's
    cache are uploaded first and the ledgers read again. Yields a guard that raises once the lease
    is lost."""
    if not isinstance(storage, ObjectStorage):
        with folder_lock(storage.work_dir, shard):
            yield lambda: None
        return
    with hold_lease(storage, lock_name(shard), ttl=lease_ttl, holder=None if shard is None else str(shard)) as lease:
        # Taken first, then the others checked: of two runs starting at once (a shard and a
        # whole-output run), at least one sees the other's lease, and gives its own back.
        _refuse_others(storage, [LOCK] if shard is not None else None)
        name = ledger_name(shard)
        try:
            upload_pending(storage, name, wal_dir(storage.work_dir, name), writer)
            storage.compact(name, keep=64)  # a ledger left in many segments (a killed run) read as one
            storage.sync_view()
        except OSError as e:
            raise UserError(str(e), ExitCode.ABORTED) from None
        yield lease.guard


def _refuse_others(storage: ObjectStorage, names: list[str] | None) -> None:
    """Exit 3 when one of ``names`` (None: every shard's lease) is live."""
    now = time.time()
    if names is None:
        names = [n for n in _lease_names(storage) if n != LOCK]
    live = [n for n in names if _live(storage, n, now)]
    if live:
        raise UserError(f"{storage.display}: another batchgen run is using this output folder; "
                        f"wait for it to finish (this run changed nothing; its lease: {live[0]})", ExitCode.ABORTED)


def _lease_names(storage: ObjectStorage) -> list[str]:
    try:
        names = storage.fs.ls(storage.out.root, detail=False)
    except FileNotFoundError:
        return []
    except Exception as e:
        raise failure(storage.out, e) from None
    return [n.rsplit("/", 1)[-1] for n in names if n.rsplit("/", 1)[-1].startswith(LOCK)]


def _live(storage: ObjectStorage, name: str, now: float) -> bool:
    found = read_lease(storage, name)
    return found is not None and found.live(now)


def run_ledger(storage: Storage, shard: Shard | None, state: L.LedgerState, writer: str) -> L.Ledger:
    """The ledger a run appends to: the folder's file, or an object store's write-ahead file."""
    if isinstance(storage, ObjectStorage):
        return WalLedger(storage, ledger_name(shard), state, writer=writer)
    return L.Ledger(storage.work_dir / ledger_name(shard), state=state)


async def run_uploading(ledger: L.Ledger, guard: Callable[[], None], work: Callable[[], Awaitable[T]],
                        warn: Callable[[str], None], *, interval: float = 2.0) -> T:
    """``work()`` with, for an object store, its ledger uploaded as it goes and once more at the end."""
    if not isinstance(ledger, WalLedger):
        return await work()
    result: list[T] = []
    ledger.guard = guard
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: upload_loop(ledger, interval=interval, warn=warn))
            try:
                result.append(await work())
            finally:
                tg.cancel_scope.cancel()
    except Exception:
        with contextlib.suppress(Exception):  # what can go up now does; the rest waits for the next run
            guard()
            await anyio.to_thread.run_sync(final_upload, ledger)
        raise
    guard()
    await anyio.to_thread.run_sync(final_upload, ledger)
    return result[0]


@dataclass(frozen=True)
class ReadView:
    """A local folder holding an output's ledgers, and how to check and read its images."""

    where: str  # the folder or URL, for messages
    folder: Path
    files: FileChecks
    holder: Callable[[Shard | None], int | None]
    storage: Storage


def open_view(out: Output, cache_dir: Path | None = None) -> ReadView:
    """What ``status``, ``export``, ``report`` and ``reconcile`` read: the folder itself, or a local
    copy of an object store's ledgers (brought up to date) with its images checked in the store."""
    storage = open_output(out, cache_dir)
    if not isinstance(storage, ObjectStorage):
        folder = storage.work_dir
        return ReadView(str(folder), folder, OutputFiles(folder), lambda s: lock_holder(folder, lock_name(s)), storage)
    sync(storage)

    def holder(shard: Shard | None) -> int | None:
        found = read_lease(storage, lock_name(shard))
        return found.pid if found is not None and found.live(time.time()) else None

    return ReadView(storage.display, storage.work_dir, storage.files(), holder, storage)


def writer_token() -> str:
    return new_writer()


def store_text(storage: Storage, name: str, text: str) -> str:
    """Write a small file of the output (the report) at once; returns where it went."""
    if isinstance(storage, ObjectStorage):
        try:
            storage.call("writing " + name, storage.fs.pipe_file, storage.key(name), text.encode("utf-8"))
        except OSError as e:
            raise UserError(str(e)) from None
        return f"{storage.display}/{name}"
    from batchgen.store.files import atomic_write_text

    atomic_write_text(storage.work_dir / name, text)
    return str(storage.work_dir / name)


@contextlib.contextmanager
def whole_output(storage: Storage) -> Iterator[None]:
    """What a whole-output writer (``ledger repair``, ``reconcile --adopt``) holds: the folder's
    exclusive lock, or the ``.lock`` lease with no shard's lease live; refused (exit 3) otherwise.
    On an object store, lines appended to the local copies of its ledgers meanwhile are uploaded
    as new segments at the end."""
    if not isinstance(storage, ObjectStorage):
        from batchgen.store.lock import output_lock

        with output_lock(storage.work_dir):
            yield
        return
    writer = new_writer()
    with hold_lease(storage, LOCK):
        _refuse_others(storage, None)  # after taking its own: see hold_output
        sync(storage)
        sizes = {name: (storage.work_dir / name).stat().st_size for name in storage.ledger_dirs()}
        yield
        for name in sorted({*sizes, *(p.name for p in storage.work_dir.glob("ledger*.jsonl"))}):
            path = storage.work_dir / name
            if not path.is_file() or ".rejected." in name:
                continue
            tail = path.read_bytes()[sizes.get(name, 0):]
            if tail:
                storage.put_segment(name, f"seg-{storage.next_number(name):08d}-{writer}.jsonl", tail)


def repair_output(out: Output, cache_dir: Path | None, say: Callable[[str], None], err: Callable[[str], None]) -> int:
    """``batchgen ledger repair``: every ledger's unreadable lines moved aside. On an object store
    the repaired ledger is uploaded as a ``base`` segment standing for every segment before it, and
    the lines moved aside as ``<ledger>.rejected.jsonl`` beside them."""
    from batchgen.store.ledger import repair
    from batchgen.store.shards import LEDGER, found_ledgers

    storage = open_output(out, cache_dir)
    sync(storage)
    folder = storage.work_dir
    path = folder / LEDGER
    where = path if not isinstance(storage, ObjectStorage) else f"{storage.display}/ledgers"
    if not path.exists() and not found_ledgers(folder):
        err(f"{where}: no ledger here")
        return ExitCode.BAD_INPUT
    if path.exists() and not path.is_file():
        err(f"{path}: the ledger is not a regular file")
        return ExitCode.BAD_INPUT
    # Replacing a ledger under a live run (any shard's) would send its later lines to an unlinked file.
    with _whole(storage):
        for _, path in found_ledgers(folder):
            moved, aside = repair(path)
            if moved and isinstance(storage, ObjectStorage) and aside is not None:
                name = path.name
                # A new number (never an existing name: segments are immutable, readers cache them).
                storage.put_segment(name, f"base-{storage.next_number(name):08d}.jsonl", path.read_bytes())
                storage.call("keeping rejected lines", storage.fs.pipe_file, storage.key(aside.name), aside.read_bytes())
                say(f"moved {moved} unreadable line(s) to {storage.display}/{aside.name}; kept the rest")
            elif moved:
                say(f"moved {moved} unreadable line(s) to {aside}; kept the rest")
            else:
                shown = path if not isinstance(storage, ObjectStorage) else f"{storage.display}/ledgers/{path.name}"
                say(f"{shown}: every line is readable; nothing to repair")
    return 0


@contextlib.contextmanager
def _whole(storage: Storage) -> Iterator[None]:
    """``whole_output`` without uploading appended lines (a repair uploads its own ``base``)."""
    if not isinstance(storage, ObjectStorage):
        with whole_output(storage):
            yield
        return
    now = time.time()
    if any(_live(storage, n, now) for n in _lease_names(storage) if n != LOCK):
        raise UserError(f"{storage.display}: another batchgen run is using this output folder; wait for it "
                        "to finish (this run changed nothing)", ExitCode.ABORTED)
    with hold_lease(storage, LOCK):
        sync(storage)
        yield
