"""Names inside an output folder that depend on an item's id or on a shard: where an image goes,
which shard owns an item, which ledger and lock a shard keeps, and which ledgers a folder holds.

Both hashes below are part of the folder format. ``image_bucket`` decides where every image of
every folder is written, ``shard_of`` which ledger pays for an item; changing either would move
images or hand items to a shard whose ledger never heard of them (and pay for them again). They
must never change. Python's ``hash()`` is salted per process and never used for either.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import assert_never

from batchgen.core.errors import UserError

__all__ = [
    "BUCKETS_ABOVE",
    "LEDGER",
    "LOCK",
    "ImageLayout",
    "Shard",
    "found_ledgers",
    "image_bucket",
    "choose_layout",
    "image_folder",
    "ledger_name",
    "lock_name",
    "refuse_other_layout",
    "shard_counts",
    "shard_of",
]

LEDGER = "ledger.jsonl"  # the ledger of an unsharded run (and of every folder before shards)
LOCK = ".lock"
_SHARD_LEDGER = re.compile(r"ledger\.shard-(\d{4,})-of-(\d{4,})\.jsonl")


def _digest(item_id: str) -> bytes:
    return hashlib.sha256(item_id.encode("utf-8")).digest()


def image_bucket(item_id: str) -> str:
    """The subfolder of ``images/`` an item's image goes to: the first two hex digits of the
    SHA-256 of its id (UTF-8). 256 folders keep a million images at about 4,000 per folder."""
    return _digest(item_id)[:1].hex()


class ImageLayout(StrEnum):
    """Where a run puts new images. Flat is the folder format other programs read
    (``images/<id>.<ext>``); buckets keep a directory to a few thousand entries when a manifest
    has more images than one directory should hold. Either way the ledger's ``file`` names each
    image, and a folder may mix both: every earlier image stays where it was written."""

    AUTO = "auto"
    FLAT = "flat"
    BUCKETS = "buckets"


BUCKETS_ABOVE = 10_000  # ``auto``: a manifest of more items than this gets image buckets


def choose_layout(requested: ImageLayout | str, manifest_items: int) -> ImageLayout:
    """Resolve ``auto`` by the size of the whole manifest (every shard sees the same count, so
    every shard of a run picks the same layout)."""
    layout = ImageLayout(requested)
    if layout is ImageLayout.AUTO:
        return ImageLayout.BUCKETS if manifest_items > BUCKETS_ABOVE else ImageLayout.FLAT
    return layout


def image_folder(images_dir: Path, item_id: str, layout: ImageLayout = ImageLayout.BUCKETS) -> Path:
    """The folder a run stores the item's image in (earlier runs' files stay put)."""
    match layout:
        case ImageLayout.FLAT:
            return images_dir
        case ImageLayout.BUCKETS:
            return images_dir / image_bucket(item_id)
        case ImageLayout.AUTO:
            raise ValueError("resolve ImageLayout.AUTO with choose_layout() first")
        case _:
            assert_never(layout)


def shard_of(item_id: str, count: int) -> int:
    """Which of ``count`` shards owns an item: the first 8 bytes of the SHA-256 of its id (UTF-8),
    read as a big-endian unsigned integer, modulo ``count``."""
    return int.from_bytes(_digest(item_id)[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 0) of ``count`` (at least 2: one shard is the unsharded folder)."""

    index: int
    count: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:04d}-of-{self.count:04d}"

    def owns(self, item_id: str) -> bool:
        return shard_of(item_id, self.count) == self.index

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def ledger_name(shard: Shard | None) -> str:
    """``ledger.jsonl`` unsharded; ``ledger.shard-0003-of-0008.jsonl`` for shard 3 of 8."""
    return LEDGER if shard is None else f"ledger.{shard.name}.jsonl"


def lock_name(shard: Shard | None) -> str:
    """``.lock`` unsharded; ``.lock.shard-0003-of-0008`` for shard 3 of 8."""
    return LOCK if shard is None else f"{LOCK}.{shard.name}"


def found_ledgers(out_dir: Path) -> list[tuple[Shard | None, Path]]:
    """Every ledger in the folder: the unsharded one first (it is the older history when both
    exist), then the shards' by count and index. Names that only look alike are left out."""
    found: list[tuple[Shard | None, Path]] = []
    if (out_dir / LEDGER).is_file():
        found.append((None, out_dir / LEDGER))
    shards: list[Shard] = []
    try:
        names = os.listdir(out_dir)
    except OSError:
        names = []
    for name in names:
        m = _SHARD_LEDGER.fullmatch(name)
        if m is None:
            continue
        shard = Shard(int(m[1]), int(m[2]))
        if 0 <= shard.index < shard.count and shard.count >= 2 and ledger_name(shard) == name:
            shards.append(shard)
    shards.sort(key=lambda s: (s.count, s.index))
    found.extend((s, out_dir / ledger_name(s)) for s in shards if (out_dir / ledger_name(s)).is_file())
    return found


def shard_counts(out_dir: Path) -> set[int]:
    """The shard counts whose ledgers the folder holds (empty for an unsharded folder)."""
    return {s.count for s, _ in found_ledgers(out_dir) if s is not None}


def refuse_other_layout(out_dir: Path, shard: Shard | None) -> None:
    """A folder is split one way: items are assigned by ``shard_of(id, count)``, so another count
    (or no sharding, over sharded ledgers) would hand items to a ledger that never saw them, and
    pay for them again. Raises UserError (exit 2) naming the count the folder has."""
    counts = shard_counts(out_dir)
    if shard is not None:
        counts.discard(shard.count)
    if not counts:
        return
    have = " and ".join(str(n) for n in sorted(counts))
    asked = "without --shard-count" if shard is None else f"with --shard-count {shard.count}"
    raise UserError(
        f"{out_dir}: holds ledgers of {have} shards; running it {asked} would move items between ledgers "
        f"and pay for them twice (use --shard-count {min(counts)}, or another output folder)"
    )
