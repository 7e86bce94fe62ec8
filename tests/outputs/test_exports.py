"""Each export loads in the library it is meant for, with the ledger's rows and metadata."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchgen.cli.commands import main

GridRun = Any  # the grid_run fixture's object (tests/outputs/conftest.py)


def _export(grid_run: GridRun, fmt: str, dest: Path, *extra: str) -> None:
    assert main(["export", str(grid_run.out), "--format", fmt, "--to", str(dest), *extra]) == 0


def _check_row(row: dict, want: dict) -> None:
    params = want["params"]
    assert row["prompt"] == params["prompt"]
    for k, v in params.items():
        assert row[k] == (json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, dict) else v), k
    assert row["sha256"] == want["sha256"] and row["request_id"] == want["request_id"]
    assert isinstance(row["inference_time"], float) and row["latency_s"] > 0


def test_run_expanded_the_manifest(grid_run: GridRun) -> None:
    assert grid_run.exit_code == 1
    assert grid_run.summary["counts"]["items"] == grid_run.expected_items
    assert len(grid_run.downloaded()) == grid_run.expected_items - 1
    assert all("SEGMIND" not in line and "sandbox-local-key" not in line
               for line in (grid_run.out / "ledger.jsonl").read_text().splitlines())


def test_imagefolder_loads_in_datasets(grid_run: GridRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    dest = tmp_path / "imagefolder"
    _export(grid_run, "imagefolder", dest)
    ds = datasets.load_dataset("imagefolder", data_dir=str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    want = grid_run.downloaded()
    assert ds.num_rows == len(want) == grid_run.expected_items - 1
    for row in ds:
        _check_row(row, want[row["id"]])
        p = want[row["id"]]["params"]
        w, h = (int(x) for x in p["resolution"].removeprefix("RESOLUTION_").split("_"))
        assert row["image"].size == (w, h)


def test_webdataset_shards_load(grid_run: GridRun, tmp_path: Path) -> None:
    import webdataset as wds

    dest = tmp_path / "wds"
    _export(grid_run, "webdataset", dest, "--shard-size", "10")
    shards = sorted(dest.glob("shard-*.tar"))
    assert len(shards) == 4
    samples = list(wds.WebDataset(f"{dest}/shard-{{000000..000003}}.tar", shardshuffle=False))
    want = grid_run.downloaded()
    assert len(samples) == len(want)
    for s in samples:
        meta = json.loads(s["json"])
        _check_row(meta, want[meta["id"]])
        assert hashlib.sha256(s["png"]).hexdigest() == meta["sha256"]


def test_parquet_table_with_image_bytes(grid_run: GridRun, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from PIL import Image

    dest = tmp_path / "meta.parquet"
    _export(grid_run, "parquet", dest, "--with-images")
    table = pq.read_table(dest)
    want = grid_run.downloaded()
    assert table.num_rows == len(want)
    for row in table.to_pylist():
        _check_row(row, want[row["id"]])
        assert hashlib.sha256(row["image"]).hexdigest() == row["sha256"]
        Image.open(io.BytesIO(row["image"])).verify()
    assert main(["export", str(grid_run.out), "--format", "parquet", "--to", str(dest)]) == 2  # no silent overwrite


def test_core_runs_without_the_export_libraries(grid_run: GridRun, tmp_path: Path) -> None:
    """Block the optional libraries at import: the CLI still works, parquet says what to install."""
    code = f"""
import sys
for name in ("pyarrow", "datasets", "webdataset", "PIL"):
    sys.modules[name] = None
from batchgen.cli.commands import main
assert main(["plan", {str(grid_run.manifest)!r}, "--out", {str(grid_run.out)!r}]) == 0
assert main(["report", {str(grid_run.out)!r}, "--to", {str(tmp_path / "r.html")!r}]) == 0
assert main(["export", {str(grid_run.out)!r}, "--format", "imagefolder", "--to", {str(tmp_path / "f")!r}]) == 0
sys.exit(main(["export", {str(grid_run.out)!r}, "--format", "parquet", "--to", {str(tmp_path / "p.parquet")!r}]))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "pip install 'batchgen[datasets]'" in err[0]
