"""The downloader: turns a recorded output URL into a verified file under ``images/<bucket>/<id>.<ext>``.

The URL is already in the ledger (the poller wrote it when it read the result), so a failed
download can be retried by a later run without paying again. Bytes stream to a temporary name in
the same folder, are checked against Content-Length, the size cap and the image's own end
markers, hashed, fsync'd, and only then renamed: a file under its final name is complete.

``<bucket>`` is two hex digits of the id's hash (``store.shards.image_bucket``): a million images
spread over 256 folders instead of one. Folders written before keep their flat ``images/<id>.<ext>``
files; the ledger's ``file`` says where each image is, and nothing is moved.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles.os
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from batchgen.api.transport import (
    BadEncoding,
    BodyIncomplete,
    ConnectFailed,
    TimedOut,
    TransportError,
    Unfetchable,
)
from batchgen.core.errors import BatchgenError, ExitCode
from batchgen.engine.context import Job, Run, ServiceClient
from batchgen.engine.groupcommit import GroupCommit
from batchgen.engine.supersede import keep_superseded
from batchgen.store.imagecheck import ImageError, sniff, verify_edges
from batchgen.store.shards import image_folder
from batchgen.store.storage import LocalStorage, Storage, durable_rename, fsync_dir

__all__ = ["DownloadError", "downloader", "fetch_to_file"]

CHUNK = 64 * 1024


class DownloadError(BatchgenError):
    """A download that failed; ``retryable`` says whether the next run tries again."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class DiskFull(BatchgenError):
    """No room for an image: the run stops (exit 3) with what it has."""

    code = ExitCode.ABORTED


@dataclass(frozen=True)
class Stored:
    file: Path
    sha256: str
    bytes: int
    width: int | None
    height: int | None


async def downloader(run: Run, inbox: MemoryObjectReceiveStream[Job]) -> None:
    """A fixed pool of workers sharing one bounded stream: back-pressure reaches the poller."""
    committer = GroupCommit()  # the workers' images ready at once share a thread hop and a folder fsync
    async with inbox, anyio.create_task_group() as tg:
        for _ in range(max(1, run.cfg.download_workers)):
            tg.start_soon(_worker, run, inbox.clone(), committer)


async def _worker(run: Run, inbox: MemoryObjectReceiveStream[Job], committer: GroupCommit) -> None:
    async with inbox:
        async for job in inbox:
            await _download_job(run, job, committer)


async def _download_job(run: Run, job: Job, committer: GroupCommit | None = None) -> None:
    if not keep_superseded(run, job):
        return
    url = job.output_url or ""
    tries = 0
    while True:
        try:
            folder = image_folder(run.images_dir, job.item.id, run.cfg.image_layout)
            stored = await fetch_to_file(run.client, url, folder, job.item.id, run.cfg.max_image_bytes,
                                         storage=run.storage, committer=committer)
        except DiskFull as e:
            run.stop.abort(f"disk full while writing {run.images_dir}: {e}; free space and run again to resume")
            return
        except DownloadError as e:
            tries += 1
            if e.retryable and tries <= run.cfg.retry.download_retries:
                run.on_retry()
                await anyio.sleep(run.cfg.retry.download_delay(tries))
                continue
            run.on_failed(
                job,
                "download",
                str(e) + (" (the output URL is recorded: the next run downloads it again)" if e.retryable else ""),
                retryable=e.retryable,
                output_url=url if url.startswith("http") else None,
            )
            return
        run.on_downloaded(
            job,
            file=stored.file.relative_to(run.out_dir).as_posix(),
            sha256=stored.sha256,
            bytes=stored.bytes,
            width=stored.width,
            height=stored.height,
        )
        return


async def fetch_to_file(
    client: ServiceClient, url: str, images_dir: Path, item_id: str, cap: int, *, storage: Storage | None = None,
    committer: GroupCommit | None = None,
) -> Stored:
    """Fetch ``url`` (http(s) or inline base64) into ``images_dir/<item_id>.<ext>``, verified.

    The body arrives decoded (the transport undoes gzip), so the cap holds for the image itself.
    ``images_dir`` is created when the first bytes arrive (a symbolic link there is refused).
    ``storage``: where the verified file goes under its final name (an object store uploads it);
    without one, it is renamed in place. ``committer``: the run's group commit, for a local folder.
    """
    commit: Any
    if storage is not None and not isinstance(storage, LocalStorage):
        commit = aiofiles.os.wrap(storage.commit_image)  # an upload each: nothing to share
    else:
        commit = committer if committer is not None else aiofiles.os.wrap(durable_rename)
    if url.startswith("data:"):
        data = _decode_data_uri(url, cap)
        async with _TempImage(images_dir, item_id, commit) as tmp:
            await tmp.write(data)
            # The image is in the URL itself: an incomplete one is the same on every try.
            return await tmp.commit(refetch_helps=False)
    if not url.startswith(("http://", "https://")):
        scheme = url.split(":", 1)[0] if ":" in url else "(none)"
        raise DownloadError(f"refusing output URL with scheme {scheme!r}: only http(s) and inline base64", False)
    try:
        async with _TempImage(images_dir, item_id, commit) as tmp:
            async with client.download(url) as resp:
                if resp.status != 200:
                    retryable = resp.status >= 500 or resp.status in (408, 429)
                    raise DownloadError(f"image download answered HTTP {resp.status}", retryable)
                declared = resp.content_length
                if declared is not None and declared > cap:
                    raise DownloadError(f"image is {declared} bytes, over the {cap}-byte cap", False)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if tmp.size + len(chunk) > cap:
                        raise DownloadError(f"image stream exceeds the {cap}-byte cap", False)
                    await tmp.write(chunk)
                    if tmp.size >= 16 and sniff(tmp.head[:16]) is None:
                        raise DownloadError("the output URL does not serve an image", False)
                if declared is not None and tmp.size != declared:
                    raise DownloadError(f"truncated download: {tmp.size} of {declared} bytes", True)
            return await tmp.commit()
    except TransportError as e:
        raise _download_error(e) from None


def _download_error(e: TransportError) -> DownloadError:
    """What a transport failure means for the item: a later try may help, or it cannot."""
    match e:
        case TimedOut():
            return DownloadError("image download timed out", True)
        case Unfetchable() | BadEncoding():
            return DownloadError(f"image download: {e.reason}", False)
        case BodyIncomplete():
            return DownloadError(f"truncated download: {e.reason}", True)
        case ConnectFailed():
            return DownloadError(f"image download failed (cannot connect: {e.reason})", True)
        case _:
            return DownloadError(f"image download failed ({e.reason})", True)


def _decode_data_uri(url: str, cap: int) -> bytes:
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        raise DownloadError("inline image is not base64", False)
    if len(payload) > cap * 4 // 3 + 4:
        raise DownloadError(f"inline image exceeds the {cap}-byte cap", False)
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise DownloadError("inline image is not valid base64", False) from None


class _TempImage:
    """A temporary file beside the final name; removed unless committed.

    Held under an exclusive ``flock`` while it is written: shards share the image folders, and a
    shard starting up sweeps only the partial files no live process holds (``sweep_partials``).
    """

    def __init__(self, images_dir: Path, item_id: str, commit: Any) -> None:
        self.dir = images_dir
        self._store = commit  # async, off the event loop: polls go on while it stores
        self.item_id = item_id
        self.path = images_dir / f".{item_id}.{secrets.token_hex(4)}.part"
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.tail = b""
        self._f: Any = None
        self._committed = False

    async def __aenter__(self) -> _TempImage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._committed:
            if self._f is not None:
                self._f.close()
            try:
                self.path.unlink()
            except OSError:
                pass

    async def write(self, chunk: bytes) -> None:
        try:
            if self._f is None:
                self._f = self._create()
            # A chunk to the page cache takes microseconds: cheaper inline than a thread hop.
            if (n := self._f.write(chunk)) != len(chunk):
                self._write_rest(chunk, n)
        except OSError as e:
            _raise_os(e, self.path)
        self.hash.update(chunk)
        self.size += len(chunk)
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
        self.tail = (self.tail + chunk)[-64:]

    def _write_rest(self, chunk: bytes, done: int) -> None:
        """The file is unbuffered, and one write(2) may take only part of a chunk (a disk that fills
        up takes what fits): write the rest after the ``done`` bytes taken, or raise the error that
        stops it, as a buffered file would."""
        view = memoryview(chunk)
        while done < len(view):
            n = self._f.write(view[done:])
            if not n:
                raise OSError(errno.EIO, "a write to the image file made no progress")
            done += n

    def _create(self) -> Any:
        """The temporary file, created and locked; a sweep that got there first means another name."""
        try:
            mode = os.lstat(self.dir).st_mode  # one look: a link is refused, a missing folder made
        except FileNotFoundError:
            mode = 0
        if stat.S_ISLNK(mode):
            raise DownloadError(f"{self.dir}: is a symbolic link; batchgen never writes through one (remove it)", True)
        if not stat.S_ISDIR(mode):
            self.dir.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.dir.parent)  # a new bucket folder outlives a power cut like its first image
        while True:
            # A raw file: each chunk is written as it comes, so there is no buffer to keep (and no
            # terminal check that ``open`` makes for a buffered one).
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                alive = os.fstat(fd).st_nlink > 0
            except OSError:
                os.close(fd)
                raise
            if alive:
                return open(fd, "wb", buffering=0)  # noqa: ASYNC230, SIM115 - closed in commit or __aexit__
            os.close(fd)  # swept between its creation and the lock: it is gone, take another name
            self.path = self.dir / f".{self.item_id}.{secrets.token_hex(4)}.part"

    async def commit(self, refetch_helps: bool = True) -> Stored:
        try:
            info = verify_edges(self.head, self.tail, self.size)
        except ImageError as e:
            # A known image type that ends badly was cut short: fetching again can help. Bytes
            # that are no image at all will be the same bytes next time.
            is_image = sniff(self.head[:16]) is not None
            raise DownloadError(f"{'incomplete' if is_image else 'invalid'} image: {e}", is_image and refetch_helps) from None
        final = self.dir / f"{self.item_id}.{info.ext}"
        try:
            assert self._f is not None
            f, self._f = self._f, None
            # Off the loop: fsync the bytes, rename, fsync the folder. Shielded: a cancelled wait
            # would not stop the thread, and a file would reach its final name with no ledger line.
            with anyio.CancelScope(shield=True):
                await self._store(f, self.path, final)
            self._committed = True
        except OSError as e:
            _raise_os(e, final)
        return Stored(final, self.hash.hexdigest(), self.size, info.width, info.height)


def sweep_partials(images_dir: Path) -> int:
    """Remove temporary files killed runs left behind, in ``images/`` and its bucket folders.

    They are never complete images (a completed one was renamed), so nothing is lost, and without
    this every SIGKILL during a download would leave one behind for good. A file some live process
    still writes (another shard's download) is locked, and left alone; a killed writer's lock went
    with it. A bucket folder that is a symbolic link is not entered.
    """
    removed = 0
    folders = [images_dir]
    try:
        with os.scandir(images_dir) as entries:
            folders += [Path(e.path) for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for folder in folders:
        for p in folder.glob(".*.part"):
            removed += _sweep_one(p)
    return removed


def _sweep_one(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno != errno.ELOOP:
            return 0
        with contextlib.suppress(OSError):  # a link named like a partial: removed, never followed
            path.unlink()
            return 1
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return 0  # written right now by a live process
    try:
        path.unlink()
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)  # unlinked while locked: a writer that locks it next sees it gone


def _raise_os(e: OSError, path: Path) -> None:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull(e.strerror or "no space left on device") from None
    raise DownloadError(f"cannot write {path}: {e.strerror or e}", True) from None
