"""`run --sandbox` reruns: an image deleted after an earlier run is fetched again from its recorded URL."""

from __future__ import annotations

from batchgen.cli import commands
from batchgen.store import ledger as L
from tests.support.cli import write_manifest


def test_a_deleted_image_comes_back_from_its_recorded_url_without_a_new_submit(tmp_path):
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    out = tmp_path / "out"
    assert commands.main(["run", str(manifest), "--sandbox", "--out", str(out), "--no-progress"]) == 0
    first = L.replay(out / "ledger.jsonl")
    victim = out / first.items["img-000"].file
    original = victim.read_bytes()
    victim.unlink()

    assert commands.main(["run", str(manifest), "--sandbox", "--out", str(out), "--no-progress"]) == 0
    assert victim.read_bytes() == original
    second = L.replay(out / "ledger.jsonl")
    assert second.items["img-000"].submits == first.items["img-000"].submits == 1
    assert second.items["img-000"].output_url == first.items["img-000"].output_url
