"""An output in object storage (S3, and GCS / Azure through fsspec): images, ledger segments, views.

Object stores have no rename and no append, so the two local guarantees are kept another way:

- **Images**: the engine verifies every image in a local temporary file (``work_dir``), and
  ``commit_image`` stores it with one PUT carrying its MD5 (S3 refuses bytes that do not match);
  other stores get the library's upload (a multipart one appears whole or not at all) and a size
  check. An object exists under its final key only complete and verified.
- **Ledger**: a run appends to a local write-ahead file and uploads it as numbered, immutable
  segments (``ledgers/<ledger name>/seg-<n>-<writer>.jsonl``, see ``store.wal``); a reader
  concatenates a ledger's segments in order into a local copy (``sync_view``), so every reader of
  local folders (status, exports, the report, reconcile, replay) reads it unchanged. A ``base-<n>``
  object (written by ``ledger repair``) stands for every segment numbered up to ``n``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from batchgen.store.filecheck import MTIME_SLACK_S, FileState
from batchgen.store.files import ensure_dir
from batchgen.store.location import RemoteOutput, StorageFailure, describe_failure
from batchgen.store.storage import superseded_rel

__all__ = ["ObjectStorage", "RemoteFiles", "SEGMENTS", "segment_name"]

SEGMENTS = "ledgers"
_ONE_PUT = 64 << 20  # images are capped at 50 MiB: always one PUT on S3
_SEGMENT = re.compile(r"(seg|base)-(\d{8,})(?:-([0-9a-z]+))?\.jsonl")


def segment_name(number: int, writer: str) -> str:
    return f"seg-{number:08d}-{writer}.jsonl"


def _order(name: str) -> tuple[int, int, str] | None:
    m = _SEGMENT.fullmatch(name)
    if m is None:
        return None
    return (int(m[2]), 0 if m[1] == "base" else 1, m[3] or "")


class ObjectStorage:
    """One object-store output, with ``work_dir`` (the cache folder) as its local side."""

    def __init__(self, out: RemoteOutput, fs: Any, work_dir: Path) -> None:
        self.out = out
        self.fs = fs
        self._work = work_dir

    @property
    def display(self) -> str:
        return self.out.url

    @property
    def work_dir(self) -> Path:
        return self._work

    def key(self, rel: str) -> str:
        return f"{self.out.root}/{rel}"

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One store call; any failure becomes a one-line ``StorageFailure`` (an OSError)."""
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StorageFailure(f"{what}: {describe_failure(self.out, e)}") from None

    # ---- images ------------------------------------------------------------------------------

    def files(self) -> RemoteFiles:
        return RemoteFiles(self)

    def commit_image(self, f: Any, tmp: Path, final: Path) -> None:
        """One PUT of the verified file, checked as stored. The temporary file stays open (and
        locked) until the upload is over, so no sweep can take it meanwhile."""
        try:
            f.flush()
            size = os.fstat(f.fileno()).st_size
            key = self.key(final.relative_to(self._work).as_posix())
            if self.out.scheme != "s3" or size > _ONE_PUT or not self._put_with_md5(tmp, key):
                if self.out.scheme != "s3" or size > _ONE_PUT:
                    self.call("storing an image", self.fs.put_file, os.fspath(tmp), key)
                stored = self.call("checking a stored image", self.fs.info, key)
                if int(stored.get("size", -1)) != size:
                    raise StorageFailure(f"{self.out.url}: {key} stored as {stored.get('size')} bytes, not {size}")
            with contextlib.suppress(OSError):
                tmp.unlink()
        finally:
            f.close()

    def _put_with_md5(self, tmp: Path, key: str) -> bool:
        """One PUT carrying the bytes' MD5 (S3 refuses a body that does not match it: BadDigest).
        True when the answer's ETag is that MD5 (a plain bucket): no read-back needed. A bucket
        whose ETags are not MD5s (SSE-KMS) gets a size check instead."""
        data = tmp.read_bytes()
        md5 = hashlib.md5(data, usedforsecurity=False)
        got = self.call("storing an image", self.fs.call_s3, "put_object", Bucket=self.out.bucket,
                        Key=key.split("/", 1)[1], Body=data, ContentMD5=base64.b64encode(md5.digest()).decode())
        return str(got.get("ETag", "")).strip('"') == md5.hexdigest()

    def move_aside(self, file: str, item_id: str, params_sha: str) -> str | None:
        files = self.files()
        if files.state(file) is not FileState.INTACT:
            return None
        listing = files.listing()
        target = superseded_rel(file, item_id, params_sha, lambda rel: rel in listing)
        self.call("keeping an earlier image", self.fs.copy, self.key(file), self.key(target))
        self.call("keeping an earlier image", self.fs.rm_file, self.key(file))
        return target

    # ---- ledger segments ---------------------------------------------------------------------

    def ledger_dirs(self) -> list[str]:
        """The ledger names that have segments (``ledger.jsonl``, ``ledger.shard-….jsonl``)."""
        try:
            entries = self.call("listing the ledgers", self.fs.ls, self.key(SEGMENTS), detail=False)
        except FileNotFoundError:
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries})

    def segments(self, ledger: str) -> list[str]:
        """The keys of one ledger's live segments, in replay order (a ``base`` hides what it covers)."""
        try:
            entries = self.call("listing a ledger", self.fs.ls, self.key(f"{SEGMENTS}/{ledger}"), detail=False)
        except FileNotFoundError:
            return []
        named = [(o, e) for e in entries if (o := _order(e.rsplit("/", 1)[-1])) is not None]
        named.sort()
        bases = [o[0] for o, _ in named if o[1] == 0]
        if bases:
            top = max(bases)
            named = [(o, e) for o, e in named if (o[1] == 0 and o[0] == top) or (o[1] == 1 and o[0] > top)]
        return [e for _, e in named]

    def next_number(self, ledger: str) -> int:
        orders = [_order(k.rsplit("/", 1)[-1]) for k in self.segments(ledger)]
        return 1 + max((o[0] for o in orders if o is not None), default=0)

    def put_segment(self, ledger: str, name: str, data: bytes) -> None:
        self.call("uploading a ledger segment", self.fs.pipe_file, self.key(f"{SEGMENTS}/{ledger}/{name}"), data)

    def segment_cache(self, ledger: str) -> Path:
        """Where copies of a ledger's segments are kept (immutable: fetched or uploaded once)."""
        cache = self._work / ".segments" / ledger
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def compact(self, ledger: str, keep: int = 1) -> int:
        """Fold a ledger's segments into one ``base`` when it has more than ``keep`` (the caller holds
        the lease and uploads nothing meanwhile): a reader then fetches one object, not one per
        upload. The base holds exactly the segments listed here, is stored before anything is
        deleted, and hides what it covers even while they remain. Returns how many were folded."""
        keys = self.segments(ledger)
        if len(keys) <= keep:
            return 0
        top = max(o[0] for k in keys if (o := _order(k.rsplit("/", 1)[-1])) is not None)
        data = self._concat(ledger, keys)
        name = f"base-{top:08d}.jsonl"
        self.put_segment(ledger, name, data)
        atomic_write_bytes(self.segment_cache(ledger) / name, data)
        old = [k for k in keys if k.rsplit("/", 1)[-1] != name]
        if old:
            self.call("removing folded segments", self.fs.rm, old)
        return len(old)

    def _concat(self, ledger: str, keys: list[str]) -> bytes:
        """The segments ``keys`` of a ledger, in order, each fetched once (segments are immutable)
        and kept under ``work_dir/.segments``; copies of segments no longer listed are dropped."""
        cache = self.segment_cache(ledger)
        live = {k.rsplit("/", 1)[-1] for k in keys}
        for old in cache.iterdir():  # folded into a base since: no longer read
            if old.name not in live and _order(old.name) is not None:
                old.unlink(missing_ok=True)
        parts: list[bytes] = []
        for k in keys:
            local = cache / k.rsplit("/", 1)[-1]
            try:
                data = local.read_bytes()
            except FileNotFoundError:
                data = self.call("reading a ledger segment", self.fs.cat_file, k)
                atomic_write_bytes(local, data)
            parts.append(data if not data or data.endswith(b"\n") else data + b"\n")
        return b"".join(parts)

    def sync_view(self, only: str | None = None) -> list[str]:
        """Bring the local copies of the ledgers (``work_dir/<ledger name>``) up to date. A copy that
        did not change is left as it is (a run then need not replay it again). Returns the segment
        keys read, which change whenever a ledger does."""
        ensure_dir(self._work)
        seen: list[str] = []
        names = [only] if only is not None else self.ledger_dirs()
        for ledger in names:
            keys = self.segments(ledger)
            if not keys:
                continue
            data = self._concat(ledger, keys)
            view = self._work / ledger
            try:
                same = view.stat().st_size == len(data) and view.read_bytes() == data
            except OSError:
                same = False
            if not same:
                atomic_write_bytes(view, data)
            seen.extend(keys)
        return seen


class RemoteFiles:
    """``FileChecks`` for an object store: one listing of ``images/``, sizes compared, an object
    read and hashed only when it was written after its ``downloaded`` line (the local rule).
    ``check`` also fetches an intact object into ``work_dir/.mirror`` for readers (exports, the report)."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage
        self._listing: dict[str, tuple[int, float | None]] | None = None

    def listing(self) -> dict[str, tuple[int, float | None]]:
        if self._listing is None:
            st = self.storage
            prefix = st.key("")
            try:
                found = st.call("listing the images", st.fs.find, st.key("images"), detail=True)
            except FileNotFoundError:
                found = {}
            self._listing = {name[len(prefix):]: (int(info.get("size") or 0), _mtime(info))
                             for name, info in found.items() if info.get("type", "file") == "file"}
        return self._listing

    def state(self, file: object, *, size: object = None, sha256: object = None,
              written_ts: float | None = None) -> FileState:
        return self._examine(file, size, sha256, written_ts, fetch=False)[0]

    def check(self, file: object, *, size: object = None, sha256: object = None,
              written_ts: float | None = None) -> tuple[FileState, Path | None]:
        return self._examine(file, size, sha256, written_ts, fetch=True)

    def _examine(self, file: object, size: object, sha256: object, written_ts: float | None,
                 *, fetch: bool) -> tuple[FileState, Path | None]:
        if not _safe(file):
            return FileState.REFUSED, None
        assert isinstance(file, str)
        got = self.listing().get(file)
        if got is None:
            return FileState.MISSING, None
        if isinstance(size, int) and not isinstance(size, bool) and got[0] != size:
            return FileState.DAMAGED, None
        touched = written_ts is None or got[1] is None or got[1] > written_ts + MTIME_SLACK_S
        want = sha256.lower() if isinstance(sha256, str) and sha256 else None
        if not fetch and not (want and touched):
            return FileState.INTACT, None
        st = self.storage
        local = st.work_dir / ".mirror" / file
        try:
            data = local.read_bytes() if local.is_file() and local.stat().st_size == got[0] else None
            if data is None:
                data = st.call("reading an image", st.fs.cat_file, st.key(file))
        except FileNotFoundError:
            return FileState.MISSING, None
        if want and hashlib.sha256(data).hexdigest() != want:
            return FileState.DAMAGED, None
        if fetch and not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(local, data)
        return FileState.INTACT, local if fetch else None


def _safe(file: object) -> bool:
    """A ledger ``file`` that names a key inside the output: relative, no empty, '.' or '..' part."""
    if not isinstance(file, str) or not file or "\x00" in file or file.startswith("/") or "\\" in file:
        return False
    return all(p not in ("", ".", "..") for p in file.split("/"))


def _mtime(info: dict[str, Any]) -> float | None:
    for field in ("LastModified", "mtime", "updated", "last_modified"):
        v = info.get(field)
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (a ledger copy may hold any byte a crash left)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
