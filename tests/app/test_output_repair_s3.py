"""``ledger repair`` and ``reconcile --adopt``'s writer on an object store (moto's S3 server on loopback):
the repaired ledger goes up as a ``base`` standing for every segment before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.app.output import open_output, repair_output, whole_output
from batchgen.core.errors import ExitCode, UserError
from batchgen.store import ledger as L
from batchgen.store.lease import Lease, read_lease
from batchgen.store.location import parse_output
from batchgen.store.objstore import ObjectStorage

GOOD = b'{"ts": "2026-01-01T00:00:00Z", "item": "a", "event": "intent", "params": {"prompt": "x"}}\n'
LATER = b'{"ts": "2026-01-01T00:00:02Z", "item": "b", "event": "intent", "params": {"prompt": "y"}}\n'


def test_repair_moves_bad_lines_aside_and_uploads_a_base(s3, tmp_path: Path) -> None:
    out = parse_output(s3.url())
    storage = open_output(out, tmp_path)
    assert isinstance(storage, ObjectStorage)
    storage.put_segment("ledger.jsonl", "seg-00000001-aaaa0001.jsonl", GOOD + b"{not json\n")
    storage.put_segment("ledger.jsonl", "seg-00000002-aaaa0001.jsonl", LATER)
    said: list[str] = []
    assert repair_output(out, tmp_path, said.append, said.append) == 0
    assert said == [f"moved 1 unreadable line(s) to {s3.url()}/ledger.rejected.jsonl; kept the rest"]
    assert [k.rsplit("/", 1)[-1] for k in storage.segments("ledger.jsonl")] == ["base-00000003.jsonl"]
    assert b"{not json" in s3.fs.cat_file(f"{s3.bucket}/out/ledger.rejected.jsonl")
    fresh = open_output(out, tmp_path / "another-machine")
    assert isinstance(fresh, ObjectStorage)
    fresh.sync_view()
    assert set(L.replay(fresh.work_dir / "ledger.jsonl").items) == {"a", "b"}
    said.clear()
    assert repair_output(out, tmp_path, said.append, said.append) == 0
    assert said == [f"{s3.url()}/ledgers/ledger.jsonl: every line is readable; nothing to repair"]


def test_a_whole_output_writer_waits_for_no_shard(s3, tmp_path: Path) -> None:
    out = parse_output(s3.url())
    storage = open_output(out, tmp_path)
    assert isinstance(storage, ObjectStorage)
    storage.put_segment("ledger.jsonl", "seg-00000001-aaaa0001.jsonl", GOOD)
    shard = Lease(storage, ".lock.shard-0001-of-0002", ttl=30, holder="shard 1 of 2")
    shard.acquire()
    with pytest.raises(UserError) as refused, whole_output(storage):
        pass
    assert refused.value.code == ExitCode.ABORTED and "another batchgen run is using this output folder; wait for it to finish" in str(refused.value)
    said: list[str] = []
    with pytest.raises(UserError):
        repair_output(out, tmp_path, said.append, said.append)
    shard.release()
    with whole_output(storage):  # lines appended to the local copy meanwhile go up as a segment
        with open(storage.work_dir / "ledger.jsonl", "ab") as f:
            f.write(LATER)
    assert len(storage.segments("ledger.jsonl")) == 2
    storage.sync_view()
    assert set(L.replay(storage.work_dir / "ledger.jsonl").items) == {"a", "b"}


def test_a_manifest_output_may_name_an_object_store() -> None:
    from batchgen.app.output import manifest_output
    from batchgen.store.location import RemoteOutput

    got = manifest_output(Path("s3://bucket/nightly/posters"))  # as the manifest keeps it: a Path
    assert isinstance(got, RemoteOutput) and got.url == "s3://bucket/nightly/posters"
    assert manifest_output(Path("out/posters")) == Path("out/posters")
    assert manifest_output(Path("file:///srv/out")) == Path("/srv/out")


@pytest.mark.parametrize("shard_starts_first", [True, False])
def test_a_shard_and_a_whole_output_writer_starting_together_never_both_run(
    s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shard_starts_first: bool
) -> None:
    """Each takes its own lease before looking at the others', so whichever looks second sees the
    first; the interleaving that let both pass (both look, then both take) cannot happen."""
    from batchgen.app import output
    from batchgen.app.shards import folder_lock
    from batchgen.store.shards import Shard, lock_name

    out = parse_output(s3.url())
    storage = open_output(out, tmp_path)
    assert isinstance(storage, ObjectStorage)
    shard = Shard(1, 3)
    whole, mine = lock_name(None), lock_name(shard)
    seen_own: list[bool] = []
    real_live = output._live

    def live(st: ObjectStorage, name: str, now: float) -> bool:
        # The shard looks at the whole output's lease, the whole-output writer at the shards'.
        seen_own.append(read_lease(st, mine if name == whole else whole) is not None)
        return real_live(st, name, now)

    monkeypatch.setattr(output, "_live", live)
    first, second = ((lambda: output.hold_output(storage, shard, folder_lock=folder_lock)),
                     (lambda: whole_output(storage)))
    if not shard_starts_first:
        first, second = second, first
    with first():
        with pytest.raises(UserError) as refused, second():
            pass
        assert refused.value.code == ExitCode.ABORTED and "another batchgen run" in str(refused.value)
    assert seen_own and all(seen_own)
    assert read_lease(storage, mine) is None and read_lease(storage, whole) is None
