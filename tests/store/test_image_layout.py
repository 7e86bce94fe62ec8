"""Which layout a run's new images get: flat (the folder format other programs read) unless the
manifest is too large for one directory, or the user asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.app.runner import RunOptions, prepare
from batchgen.store.shards import BUCKETS_ABOVE, ImageLayout, choose_layout, image_bucket, image_folder
from tests.support.cli import write_manifest


def test_auto_is_flat_up_to_the_threshold_and_buckets_above() -> None:
    assert choose_layout("auto", 12) is ImageLayout.FLAT
    assert choose_layout(ImageLayout.AUTO, BUCKETS_ABOVE) is ImageLayout.FLAT
    assert choose_layout("auto", BUCKETS_ABOVE + 1) is ImageLayout.BUCKETS


@pytest.mark.parametrize("asked", ["flat", "buckets"])
def test_an_explicit_layout_wins_at_any_size(asked: str) -> None:
    assert choose_layout(asked, 3) is ImageLayout(asked)
    assert choose_layout(asked, 10 * BUCKETS_ABOVE) is ImageLayout(asked)


def test_image_folder_by_layout() -> None:
    images = Path("out/images")
    assert image_folder(images, "fox", ImageLayout.FLAT) == images
    assert image_folder(images, "fox", ImageLayout.BUCKETS) == images / image_bucket("fox") == images / "77"
    with pytest.raises(ValueError, match="choose_layout"):
        image_folder(images, "fox", ImageLayout.AUTO)


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError):
        choose_layout("nested", 3)


def test_every_shard_of_a_large_manifest_picks_buckets(tmp_path: Path) -> None:
    """The whole manifest decides, not a shard's share: shards of one run write one layout."""
    manifest = write_manifest(tmp_path / "big.yaml", BUCKETS_ABOVE + 1)
    for index in range(2):
        p = prepare(RunOptions(manifest=manifest, out=tmp_path / "out", shard_index=index, shard_count=2))
        assert len(p.manifest.items) < BUCKETS_ABOVE
        assert p.cfg.image_layout is ImageLayout.BUCKETS
    small = write_manifest(tmp_path / "small.yaml", 5)
    assert prepare(RunOptions(manifest=small, out=tmp_path / "o2")).cfg.image_layout is ImageLayout.FLAT
    asked = prepare(RunOptions(manifest=small, out=tmp_path / "o3", image_layout="buckets"))
    assert asked.cfg.image_layout is ImageLayout.BUCKETS
