"""Exports, the report and status show an image only when it is inside the output folder and is
still what the ledger recorded; an image kept aside by an edit is not shown as the item's own."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from batchgen.outputs.catalog import load_catalog
from batchgen.outputs.export import export
from batchgen.outputs.report import render_report
from batchgen.outputs.status import summarize
from batchgen.sandbox.images import render_png
from batchgen.store.filecheck import FileState
from batchgen.store.ledger import Ledger

SECRET = render_png("a secret outside the folder", 9, 48, 48)
IMAGES = {name: render_png(f"picture {name}", n, 48, 48) for n, name in enumerate("abcdef", start=1)}


def write_ledger(out: Path, files: dict[str, str], extra: list[tuple[str, str, dict[str, Any]]] = ()) -> None:
    """Items downloaded under ``files`` (item -> ledger file), each recorded with its own image's facts."""
    ledger = Ledger(out / "ledger.jsonl")
    ledger.open()
    for item, file in files.items():
        body = IMAGES[item]
        ledger.append("intent", item, params_sha="0" * 16, attempt=1, params={"prompt": f"prompt {item}"})
        ledger.append("submitted", item, request_id=f"r-{item}")
        ledger.append("completed", item, request_id=f"r-{item}", output_url=f"https://cdn/{item}.png", cost_usd=0.1)
        ledger.append("downloaded", item, request_id=f"r-{item}", file=file,
                      sha256=hashlib.sha256(body).hexdigest(), bytes=len(body))
    for kind, item, fields in extra:
        ledger.append(kind, item, **fields)
    ledger.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a: fine; b: ../ escape; c: absolute path; d: symlink out; e: truncated; f: rewritten, same size."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    for name in "ab cd":
        if name.strip():
            (tmp_path / f"{name}.png").write_bytes(IMAGES[name])  # the right bytes, in the wrong place
    (out / "images" / "a.png").write_bytes(IMAGES["a"])
    (out / "images" / "d.png").symlink_to(secret)
    (out / "images" / "e.png").write_bytes(IMAGES["e"][:-30])
    rewritten = bytearray(IMAGES["f"])
    rewritten[40] ^= 0xFF
    (out / "images" / "f.png").write_bytes(bytes(rewritten))
    write_ledger(out, {
        "a": "images/a.png", "b": "../b.png", "c": str(tmp_path / "c.png"), "d": "images/d.png",
        "e": "images/e.png", "f": "images/f.png",
    })
    later = (out / "ledger.jsonl").stat().st_mtime + 60  # f was rewritten after its line was written
    os.utime(out / "images" / "f.png", (later, later))
    return out


def test_the_catalog_ships_only_images_inside_the_folder_and_as_recorded(folder: Path) -> None:
    cat = load_catalog(folder)
    assert [r.id for r in cat.downloaded()] == ["a"]
    seen = {r.id: cat.file_state(r) for r in cat.records.values()}
    assert seen == {"a": FileState.INTACT, "b": FileState.REFUSED, "c": FileState.REFUSED,
                    "d": FileState.REFUSED, "e": FileState.DAMAGED, "f": FileState.DAMAGED}


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset", "parquet"])
def test_no_export_reads_a_file_outside_the_folder_or_a_damaged_one(folder: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    dest = tmp_path / "export"
    n, _ = export(load_catalog(folder), fmt, dest, with_images=fmt == "parquet")
    assert n == 1
    written = b"".join(p.read_bytes() for p in dest.rglob("*") if p.is_file())
    assert IMAGES["a"] in written or fmt == "parquet"  # parquet may compress the bytes
    for item in "bcdef":
        assert f'"id": "{item}"'.encode() not in written and f'"id":"{item}"'.encode() not in written
    for body in (SECRET, IMAGES["b"], IMAGES["c"]):
        assert body not in written


def test_the_report_embeds_no_file_outside_the_folder(folder: Path) -> None:
    page = render_report(load_catalog(folder))
    for body in (SECRET, IMAGES["b"], IMAGES["c"], IMAGES["e"][:-30]):
        assert base64.b64encode(body).decode()[:200] not in page
    assert page.count("data:image/") == 1  # a's, and only a's
    assert page.count('class="card"') == 6  # every item still has its card


def test_status_counts_refused_and_damaged_files_as_missing(folder: Path) -> None:
    assert sorted(summarize(folder)["missing_files"]) == ["b", "c", "d", "e", "f"]


def test_an_image_kept_aside_by_an_edit_is_not_the_items_image(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    kept = "images/a~superseded-00000000.png"
    (out / kept).write_bytes(IMAGES["a"])
    (out / "images" / "a.png").write_bytes(IMAGES["b"])
    body = IMAGES["b"]
    write_ledger(out, {"a": "images/a.png"}, extra=[
        ("intent", "a", {"params_sha": "1" * 16, "attempt": 1, "params": {"prompt": "edited"}}),
        ("submitted", "a", {"request_id": "r-2"}),
        ("completed", "a", {"request_id": "r-2", "output_url": "https://cdn/2.png"}),
        ("superseded", "a", {"file": kept, "was": "images/a.png", "params_sha": "0" * 16}),
        ("downloaded", "a", {"request_id": "r-2", "file": "images/a.png", "sha256": hashlib.sha256(body).hexdigest(),
                             "bytes": len(body)}),
    ])
    # Recorded with a's first image's facts, then overwritten: set the times a real run leaves.
    os.utime(out / "images" / "a.png", (0, 0))
    cat = load_catalog(out)
    (rec,) = cat.downloaded()
    assert rec.params == {"prompt": "edited"} and rec.superseded == [kept] and rec.sha256 == hashlib.sha256(body).hexdigest()
    dest = tmp_path / "if"
    export(cat, "imagefolder", dest)
    (row,) = [json.loads(line) for line in (dest / "train" / "metadata.jsonl").read_text().splitlines()]
    assert row["prompt"] == "edited" and (dest / "train" / row["file_name"]).read_bytes() == IMAGES["b"]
    assert sorted(p.name for p in (dest / "train").iterdir()) == ["a.png", "metadata.jsonl"]
    page = render_report(cat)
    assert page.count("data:image/") == 1 and "edited" in page
