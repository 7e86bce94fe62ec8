"""The object-store side of ``store`` against moto's S3 server (a real S3 API on loopback, no mocks):
URLs, image objects and their checks, ledger segments and the write-ahead file, leases."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from batchgen.core.errors import ExitCode, UserError
from batchgen.store import ledger as L
from batchgen.store.filecheck import FileState
from batchgen.store.lease import Lease, hold_lease, read_lease
from batchgen.store.location import RemoteOutput, cache_root, open_filesystem, parse_output
from batchgen.store.objstore import ObjectStorage
from batchgen.store.wal import WalLedger, upload_pending, wal_dir
from tests.support.images import make_png


@pytest.fixture
def store(s3, tmp_path: Path) -> ObjectStorage:
    out = parse_output(s3.url())
    assert isinstance(out, RemoteOutput)
    return ObjectStorage(out, open_filesystem(out), tmp_path / "work")


def test_urls_name_folders_or_object_stores() -> None:
    assert parse_output("out/x") == Path("out/x")
    assert parse_output("file:///srv/out") == Path("/srv/out")
    got = parse_output("s3://bucket/some/prefix/")
    assert isinstance(got, RemoteOutput) and (got.url, got.bucket, got.root) == (
        "s3://bucket/some/prefix", "bucket", "bucket/some/prefix")
    for bad in ("s3://", "s3://b/../x", "s3://b//x", "ftp://host/x", "file://host/x"):
        with pytest.raises(UserError):
            parse_output(bad)
    a, b = parse_output("s3://b/x"), parse_output("s3://b/y")
    assert isinstance(a, RemoteOutput) and isinstance(b, RemoteOutput)
    assert cache_root(a, None, {"XDG_CACHE_HOME": "/c"}).parent == Path("/c/batchgen")
    assert cache_root(a, Path("/d"), {}) != cache_root(b, Path("/d"), {})


def test_a_missing_fsspec_backend_is_one_line_naming_the_package() -> None:
    out = parse_output("gs://bucket/x")
    assert isinstance(out, RemoteOutput)
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"needs the gcsfs package \(pip install gcsfs\)"):
            open_filesystem(out)
    else:
        pytest.skip("gcsfs is installed here")


def _stage(store: ObjectStorage, rel: str, data: bytes) -> tuple[object, Path, Path]:
    final = store.work_dir / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.part")
    f = open(tmp, "wb")  # noqa: SIM115 - commit_image closes it
    f.write(data)
    return f, tmp, final


def test_an_image_is_stored_whole_under_its_key_and_checked_by_size_and_hash(store: ObjectStorage, s3) -> None:
    png = make_png(8, 8)
    f, tmp, final = _stage(store, "images/ab/x.png", png)
    store.commit_image(f, tmp, final)
    assert not tmp.exists(), "the temporary file is gone once the object is stored"
    assert s3.keys() == ["images/ab/x.png"] and s3.fs.cat_file(f"{s3.bucket}/out/images/ab/x.png") == png
    sha = hashlib.sha256(png).hexdigest()
    files = store.files()
    assert files.state("images/ab/x.png", size=len(png), sha256=sha) is FileState.INTACT
    assert files.state("images/ab/x.png", size=len(png) + 1) is FileState.DAMAGED
    assert files.state("images/ab/x.png", size=len(png), sha256="0" * 64) is FileState.DAMAGED  # hashed: no time
    assert files.state("images/ab/x.png", size=len(png), sha256="0" * 64, written_ts=time.time() + 60) \
        is FileState.INTACT  # not written since its line: only the size is compared, as locally
    assert files.state("images/ab/y.png") is FileState.MISSING
    for outside in ("../x.png", "/etc/passwd", "images/../../x", "images//x.png"):
        assert files.state(outside) is FileState.REFUSED
    found, local = files.check("images/ab/x.png", size=len(png), sha256=sha)
    assert found is FileState.INTACT and local is not None and local.read_bytes() == png

    moved = store.move_aside("images/ab/x.png", "x", "f" * 64)
    assert moved == "images/ab/x~superseded-ffffffff.png"
    assert s3.keys() == ["images/ab/x~superseded-ffffffff.png"]


def test_the_ledger_goes_up_in_segments_and_reads_back_in_order(store: ObjectStorage, s3) -> None:
    # A killed run left a rotated segment and a current file with a torn last line on this disk.
    folder = wal_dir(store.work_dir, "ledger.jsonl")
    folder.mkdir(parents=True)
    (folder / "seg-00000001-deadbeef.jsonl").write_text(json.dumps({"ts": "2026-01-01T00:00:00Z", "item": "a",
                                                                     "event": "intent"}) + "\n")
    (folder / "current.jsonl").write_text(json.dumps({"ts": "2026-01-01T00:00:01Z", "item": "b",
                                                       "event": "intent"}) + '\n{"ts": "2026-01-')
    assert upload_pending(store, "ledger.jsonl", folder, "cafe0001") == 2
    assert not any(folder.iterdir())
    store.sync_view()
    state = L.replay(store.work_dir / "ledger.jsonl")
    assert set(state.items) == {"a", "b"} and not state.torn_tail

    ledger = WalLedger(store, "ledger.jsonl", state, writer="cafe0002")
    ledger.open()
    ledger.append("intent", "c", params={"prompt": "x"})
    assert ledger.rotate() and not ledger.rotate()  # nothing new: nothing to rotate
    ledger.append("submitted", "c", request_id="r1")
    ledger.close()
    assert upload_pending(store, "ledger.jsonl", folder, "cafe0002", leftover=False) == 1
    assert [k.rsplit("/", 1)[-1] for k in store.segments("ledger.jsonl")] == [
        "seg-00000001-deadbeef.jsonl", "seg-00000002-cafe0001.jsonl", "seg-00000003-cafe0002.jsonl"]
    store.sync_view()
    again = L.replay(store.work_dir / "ledger.jsonl")
    assert again.items["c"].request_id is None and again.items["c"].state == L.INTENT  # its answer is local yet

    # Folded into one object for the next reader: the same ledger, one GET.
    assert store.compact("ledger.jsonl") == 3
    assert [k.rsplit("/", 1)[-1] for k in store.segments("ledger.jsonl")] == ["base-00000003.jsonl"]
    assert s3.keys() == ["ledgers/ledger.jsonl/base-00000003.jsonl"]
    store.sync_view()
    assert set(L.replay(store.work_dir / "ledger.jsonl").items) == {"a", "b", "c"}

    # A base segment (a repair) stands for every segment up to its number.
    store.put_segment("ledger.jsonl", "base-00000004.jsonl", b'{"ts": "2026-01-01T00:00:00Z", "item": "z", '
                      b'"event": "intent"}\n')
    store.sync_view()
    assert set(L.replay(store.work_dir / "ledger.jsonl").items) == {"z"}


def test_a_lease_refuses_a_second_holder_and_is_taken_over_once_expired(store: ObjectStorage) -> None:
    killed = Lease(store, ".lock", ttl=0.6, holder=None)
    killed.acquire()  # and never renewed: its process is gone
    found = read_lease(store, ".lock")
    assert found is not None and found.holder == killed.token and found.live(time.time())
    with pytest.raises(UserError) as refused:
        Lease(store, ".lock", ttl=5, holder="shard 1 of 3").acquire()
    assert refused.value.code == ExitCode.ABORTED
    assert "another batchgen run is running shard 1 of 3 in this output folder; wait for it to finish" in str(refused.value)

    time.sleep(0.7)
    with hold_lease(store, ".lock", ttl=5) as taker:
        assert read_lease(store, ".lock").holder == taker.token  # type: ignore[union-attr]
        killed.ttl = 0.03  # the old holder wakes up and renews: its ETag no longer matches
        killed.start()
        killed._thread.join(timeout=5)  # type: ignore[union-attr]
        assert killed.lost
        with pytest.raises(UserError, match="taken over by another run"):
            killed.guard()
    assert read_lease(store, ".lock") is None, "given back at the end"


async def test_an_intent_is_stored_before_its_post_unless_the_lease_was_lost(store: ObjectStorage, s3) -> None:
    ledger = WalLedger(store, "ledger.jsonl", L.LedgerState(), writer="beef0001")
    ledger.open()
    ledger.append("intent", "a", params={"prompt": "x"})
    assert await ledger.barrier() is None
    assert s3.keys() == ["ledgers/ledger.jsonl/seg-00000001-beef0001.jsonl"]

    def lost() -> None:
        raise UserError("this run's lease was taken over", ExitCode.ABORTED)

    ledger.guard = lost
    ledger.append("intent", "b", params={"prompt": "y"})
    assert await ledger.barrier() == "this run's lease was taken over"
    assert len(s3.keys()) == 1, "nothing more goes up once the lease is lost"
    ledger.close()


async def test_a_long_run_folds_its_segments_as_it_goes(store: ObjectStorage, s3) -> None:
    ledger = WalLedger(store, "ledger.jsonl", L.LedgerState(), writer="beef0002", fold_every=3)
    ledger.open()
    for i in range(7):
        ledger.append("intent", f"i{i}", params={"prompt": str(i)})
        await ledger.barrier()
    ledger.close()
    names = [k.rsplit("/", 1)[-1] for k in store.segments("ledger.jsonl")]
    assert names == ["base-00000006.jsonl", "seg-00000007-beef0002.jsonl"], names
    assert len(s3.keys()) == 2, "folded segments are deleted"
    fresh = ObjectStorage(store.out, store.fs, store.work_dir.parent / "cold")
    fresh.sync_view()
    assert [k for k in L.replay(fresh.work_dir / "ledger.jsonl").items] == [f"i{i}" for i in range(7)]


def test_a_store_error_names_the_problem_never_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchgen.store.location import describe_failure

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-very-secret")
    out = parse_output("s3://bucket/p")
    assert isinstance(out, RemoteOutput)
    said = describe_failure(out, OSError("signature mismatch for wJalrXUtnFEMI-very-secret\nmore detail"))
    assert "wJalrXUtnFEMI-very-secret" not in said and "***" in said and "\n" not in said
    assert describe_failure(out, PermissionError("AccessDenied")).startswith("s3://bucket/p: access denied")


def test_a_lease_the_store_stops_renewing_stops_the_run_before_it_could_expire(store: ObjectStorage) -> None:
    """The store stops answering this run (its renewals fail) while other runs may still reach it:
    before the lease can expire and be taken over, the run's guard stops it (no POST goes out)."""
    with hold_lease(store, ".lock", ttl=0.6) as lease:
        lease.guard()  # fresh

        def unreachable(**kwargs: object) -> bool:
            raise OSError("cannot reach the object store")

        lease._put = unreachable  # type: ignore[method-assign]
        time.sleep(0.6 * 0.85)
        with pytest.raises(UserError, match="could not be renewed") as stale:
            lease.guard()
        assert stale.value.code == ExitCode.ABORTED and not lease.lost


def _line(item: str) -> bytes:
    return b'{"ts": "2026-01-01T00:00:00Z", "item": "' + item.encode() + b'", "event": "intent", "params": {}}\n'


@pytest.mark.parametrize("already_folded", [False, True])
def test_a_segment_left_unsent_while_others_went_on_is_never_hidden_nor_doubled(
    store: ObjectStorage, tmp_path: Path, already_folded: bool
) -> None:
    """This machine's run stopped with seg 2 unsent (the store did not answer); a run elsewhere
    wrote segments 1-4 and folded them into base 4. Sent now as seg 2 it would be hidden by the
    base: it goes up under the next number, unless its lines are in the base already."""
    lines_b = _line("b1") + _line("b2")
    left = _line("a-left")
    store.put_segment("ledger.jsonl", "base-00000004.jsonl", lines_b + (left if already_folded else b""))
    folder = wal_dir(store.work_dir, "ledger.jsonl")
    folder.mkdir(parents=True)
    (folder / "seg-00000002-aaaa0001.jsonl").write_bytes(left)
    upload_pending(store, "ledger.jsonl", folder, "bbbb0002")
    names = [k.rsplit("/", 1)[-1] for k in store.segments("ledger.jsonl")]
    store.sync_view()
    replayed = L.replay(store.work_dir / "ledger.jsonl")
    assert set(replayed.items) == {"b1", "b2", "a-left"}
    if already_folded:
        assert names == ["base-00000004.jsonl"] and replayed.lines == 3  # not doubled
    else:
        assert names == ["base-00000004.jsonl", "seg-00000005-bbbb0002.jsonl"]
