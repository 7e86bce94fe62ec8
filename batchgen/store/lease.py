"""One writer per object-store output (or shard): a lease object with its holder and expiry.

The local lock is a ``flock`` the kernel drops when its process dies. An object store has no such
thing, so a run writes ``<prefix>/.lock`` (``.lock.shard-…`` for a shard) holding who it is (a
random token, host, pid) and until when, and renews it in the background every third of its time to
live. Taking it is a conditional write: S3's ``If-None-Match: *`` creates it only if absent, and an
expired lease is replaced with ``If-Match`` on the ETag that was read, so of two runs racing for it
exactly one wins. A live lease refuses a second run (exit 3), as the local lock does; a killed run's
lease is taken over once it has expired. Stores without conditional writes (other fsspec backends)
write, wait and read back: a race narrower than a second is then possible, and documented.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from batchgen.core.errors import ExitCode, UserError
from batchgen.store.location import describe_failure
from batchgen.store.objstore import ObjectStorage

__all__ = ["Lease", "LeaseInfo", "hold_lease", "read_lease"]

DEFAULT_TTL_S = 60.0
STALE_SHARE = 0.8  # a lease not renewed for this share of its time stops the run (guard)


@dataclass(frozen=True)
class LeaseInfo:
    holder: str
    host: str
    pid: int
    expires: float
    etag: str | None

    def live(self, now: float) -> bool:
        return self.expires > now


def _refused(storage: ObjectStorage, holder: str | None) -> UserError:
    # The local lock's words (store.lock), so scripts and people read one message for both.
    using = "using this output folder" if holder is None else f"running {holder} in this output folder"
    return UserError(f"{storage.display}: another batchgen run is {using}; wait for it to finish "
                     "(this run changed nothing)", ExitCode.ABORTED)


def read_lease(storage: ObjectStorage, name: str) -> LeaseInfo | None:
    """The lease ``name`` as stored now, or None when there is none (or it is unreadable)."""
    key = storage.key(name)
    try:
        # The ETag first: if the lease changes before it is read, a write conditional on this ETag fails.
        etag = storage.fs.info(key).get("ETag") if storage.out.scheme == "s3" else None
        data = storage.fs.cat_file(key)
    except FileNotFoundError:
        return None
    except Exception as e:
        if "NoSuchKey" in type(e).__name__ or "NoSuchKey" in str(e):
            return None
        raise UserError(describe_failure(storage.out, e)) from None
    try:
        doc = json.loads(data)
        return LeaseInfo(str(doc["holder"]), str(doc.get("host", "?")), int(doc.get("pid", 0)),
                         float(doc["expires"]), etag)
    except (ValueError, KeyError, TypeError):
        return LeaseInfo("?", "?", 0, 0.0, etag)  # unreadable: treated as expired


def _s3_key(storage: ObjectStorage, key: str) -> str:
    return key.split("/", 1)[1]


class Lease:
    """A held lease: renewed by a background thread until ``release``; ``lost`` once another run has
    taken it (this run must then write nothing more)."""

    def __init__(self, storage: ObjectStorage, name: str, ttl: float, holder: str | None) -> None:
        self.storage = storage
        self.name = name
        self.ttl = ttl
        self.holder_text = holder
        self.token = secrets.token_hex(8)
        self.etag: str | None = None
        self.lost = False
        self.renewed_at: float | None = None  # monotonic time of the last write that held it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"holder": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires": time.time() + self.ttl, "ttl": self.ttl}).encode()

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> bool:
        """One conditional write; False when its condition did not hold."""
        st = self.storage
        key = st.key(self.name)
        if st.out.scheme != "s3":
            st.fs.pipe_file(key, self._body())
            self.renewed_at = time.monotonic()
            return True
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            got = st.fs.call_s3("put_object", Bucket=st.out.bucket, Key=_s3_key(st, key), Body=self._body(), **extra)
        except FileExistsError:
            return False
        except OSError as e:
            if "pre-condition" in str(e) or "PreconditionFailed" in str(e) or "ConditionalRequestConflict" in str(e):
                return False
            raise
        self.etag = got.get("ETag")
        self.renewed_at = time.monotonic()
        return True

    def acquire(self) -> None:
        try:
            if self._put(if_none_match=True):
                return self._confirm()
            now = time.time()
            found = read_lease(self.storage, self.name)
            if found is not None and found.live(now):
                raise _refused(self.storage, self.holder_text)
            if found is None:
                ok = self._put(if_none_match=True)
            else:
                ok = self._put(if_match=found.etag) if found.etag else self._put()
            if not ok:
                raise _refused(self.storage, self.holder_text)
            self._confirm()
        except UserError:
            raise
        except Exception as e:
            raise UserError(describe_failure(self.storage.out, e)) from None

    def _confirm(self) -> None:
        """Without conditional writes, the last writer wins: read back after a moment to see who."""
        if self.storage.out.scheme == "s3":
            return
        time.sleep(0.5)
        found = read_lease(self.storage, self.name)
        if found is None or found.holder != self.token:
            raise _refused(self.storage, self.holder_text)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if self.storage.out.scheme == "s3":
                    ok = self._put(if_match=self.etag) if self.etag else False
                else:
                    found = read_lease(self.storage, self.name)
                    ok = found is not None and found.holder == self.token and self._put()
            except Exception:  # a store that does not answer now: tried again next time
                continue
            if not ok:
                self.lost = True
                return

    def guard(self) -> None:
        """Raises (exit 3) once another run holds the lease, or may soon: this one must write (and
        submit) nothing more. A lease not renewed for most of its time is as good as lost: the
        store may be answering other runs, and one of them may take it once it expires."""
        if self.lost:
            raise UserError(f"{self.storage.display}: this run's lease ({self.name}) was taken over by another run "
                            "(the store was unreachable longer than the lease lasts); stopping", ExitCode.ABORTED)
        age = None if self.renewed_at is None else time.monotonic() - self.renewed_at
        if age is not None and age > STALE_SHARE * self.ttl:
            raise UserError(f"{self.storage.display}: this run's lease ({self.name}) could not be renewed for {age:.0f} s "
                            f"(it lasts {self.ttl:g} s; the store does not answer); stopping before another run can take "
                            "it over", ExitCode.ABORTED)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.lost:
            return
        try:
            found = read_lease(self.storage, self.name)
            if found is not None and found.holder == self.token:
                self.storage.fs.rm_file(self.storage.key(self.name))
        except Exception:  # it expires by itself
            pass


@contextmanager
def hold_lease(storage: ObjectStorage, name: str, *, ttl: float = DEFAULT_TTL_S,
               holder: str | None = None) -> Iterator[Lease]:
    """Take the lease ``name`` (refused, exit 3, while another run holds it live), renew it while
    the block runs, and give it up at the end."""
    lease = Lease(storage, name, ttl, holder)
    lease.acquire()
    lease.start()
    try:
        yield lease
    finally:
        lease.release()
