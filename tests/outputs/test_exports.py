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


# --- ids that contain split words (issue 10, point 1) ------------------------------------------------

SPLIT_WORD_IDS = ["a-steam-train", "test-card", "eval-01", "dev", "val", "training.set", "validation",
                  "testing-2", "my-evaluation", "train", "valid_x", "plain", "long." + "x" * 95]


@pytest.fixture(scope="module")
def split_word_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sandbox run whose ids contain every word ``datasets`` reads as a split name."""
    root = tmp_path_factory.mktemp("splitwords")
    lines = ["name: splitwords", "defaults:", "  resolution: RESOLUTION_640_1024", "items:"]
    for i, item_id in enumerate(SPLIT_WORD_IDS):
        lines += [f"  - id: {item_id}", f"    prompt: picture {i} of {item_id}",
                  f"    style_type: {('REALISTIC', 'ANIME', 'DESIGN')[i % 3]}"]
        if i == 2:
            lines.append("    color_palette: {name: EMBER}")
    (root / "m.yaml").write_text("\n".join(lines) + "\n")
    out = root / "out"
    assert main(["run", str(root / "m.yaml"), "--sandbox", "--out", str(out), "--no-progress"]) == 0
    return out


def test_imagefolder_loads_every_row_whatever_the_ids(split_word_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's recipe, without split=: one train split holding every image and every column."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    from batchgen.outputs.catalog import load_catalog
    from batchgen.outputs.export import rows

    dest = tmp_path / "if"
    assert main(["export", str(split_word_run), "--format", "imagefolder", "--to", str(dest)]) == 0
    dd = datasets.load_dataset("imagefolder", data_dir=str(dest), cache_dir=str(tmp_path / "cache"))
    assert list(dd) == ["train"]
    ds = dd["train"]
    want = {r["id"]: r for r in rows(load_catalog(split_word_run).downloaded())}
    assert sorted(ds["id"]) == sorted(want) == sorted(SPLIT_WORD_IDS)
    columns = set(next(iter(want.values()))) - {"file_name"}
    assert set(ds.column_names) == columns | {"image"}
    assert "color_palette" in columns and "style_type" in columns and "resolution" in columns
    for row in ds:
        expect = {k: v for k, v in want[row["id"]].items() if k != "file_name"}
        assert {k: row[k] for k in expect} == pytest.approx(expect)
        assert row["image"].size == (640, 1024)


def test_webdataset_takes_the_longest_ids(split_word_run: Path, tmp_path: Path) -> None:
    """A 100-character id (the longest allowed) is a 105-character member name: past USTAR's limit."""
    import webdataset as wds

    assert max(map(len, SPLIT_WORD_IDS)) == 100
    dest = tmp_path / "wds"
    assert main(["export", str(split_word_run), "--format", "webdataset", "--to", str(dest)]) == 0
    samples = list(wds.WebDataset(str(dest / "shard-000000.tar"), shardshuffle=False))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(SPLIT_WORD_IDS)
    assert all(hashlib.sha256(s["png"]).hexdigest() == json.loads(s["json"])["sha256"] for s in samples)


# --- options a format cannot honour, and where a parquet table goes (issue 10, point 5) --------------

@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_with_images_is_refused_for_formats_that_store_files(grid_run: GridRun, tmp_path: Path, fmt: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "x"
    assert main(["export", str(grid_run.out), "--format", fmt, "--to", str(dest), "--with-images"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--with-images" in lines[0] and "parquet" in lines[0]
    assert not dest.exists()


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(path).num_rows


@pytest.mark.parametrize(("to", "table"), [
    ("new/", "new/metadata.parquet"),  # trailing slash: a folder
    ("new", "new/metadata.parquet"),  # no .parquet suffix: a folder, as the README promises
    ("a/b/t.parquet", "a/b/t.parquet"),  # the suffix: that file
    ("d.parquet/", "d.parquet/metadata.parquet"),  # a trailing slash wins over the suffix
])
def test_parquet_destination_that_does_not_exist_yet(grid_run: GridRun, tmp_path: Path, to: str, table: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    dest = str(tmp_path) + os.sep + to
    assert main(["export", str(grid_run.out), "--format", "parquet", "--to", dest]) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / table))
    assert (tmp_path / table).is_file() and _parquet_rows(tmp_path / table) == grid_run.expected_items - 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_parquet_into_an_existing_folder(grid_run: GridRun, tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    _export(grid_run, "parquet", tmp_path / "exports")
    assert _parquet_rows(tmp_path / "exports" / "metadata.parquet") == grid_run.expected_items - 1
    assert main(["export", str(grid_run.out), "--format", "parquet", "--to", str(tmp_path / "exports")]) == 2


def test_export_help_says_how_dest_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ends in .parquet" in text and "DEST/metadata.parquet" in text and "trailing / always means a folder" in text
    assert "parquet only" in text  # --with-images


# --- the exporter interface ---------------------------------------------------------------------------

def test_parquet_in_row_groups_keeps_one_schema(grid_run: GridRun, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Images are read a group at a time; the table is the same as one written at once."""
    import pyarrow.parquet as pq

    from batchgen.outputs.catalog import load_catalog
    from batchgen.outputs.export import parquet, rows

    monkeypatch.setattr(parquet, "ROWS_PER_GROUP", 5)
    dest = tmp_path / "t.parquet"
    _export(grid_run, "parquet", dest, "--with-images")
    f = pq.ParquetFile(dest)
    n = grid_run.expected_items - 1
    assert f.metadata.num_row_groups == -(-n // 5)
    recs = load_catalog(grid_run.out).downloaded()
    got = f.read().to_pylist()
    assert [{k: v for k, v in r.items() if k != "image"} for r in got] == rows(recs)
    assert [r["image"] for r in got] == [(grid_run.out / (rec.file or "")).read_bytes() for rec in recs]


def test_driver_feeds_every_record_then_closes(grid_run: GridRun, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchgen.outputs.catalog import load_catalog
    from batchgen.outputs.export import Exporter, Sample, driver, export, rows

    class Recorder(Exporter):
        def __init__(self) -> None:
            self.samples: list[Sample] = []
            self.calls: list[str] = []

        def write(self, sample: Sample) -> None:
            self.samples.append(sample)

        def close(self) -> str:
            self.calls.append("close")
            return "somewhere"

        def abort(self) -> None:
            self.calls.append("abort")

    rec = Recorder()
    monkeypatch.setattr(driver, "open_exporter", lambda *a, **k: rec)
    cat = load_catalog(grid_run.out)
    assert export(cat, "imagefolder", "ignored") == (grid_run.expected_items - 1, "somewhere")
    assert rec.calls == ["close"]
    assert [s.row for s in rec.samples] == rows(cat.downloaded())
    assert all(s.image.is_file() and s.mtime > 0 for s in rec.samples)


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset", "parquet"])
def test_image_gone_mid_export_is_one_line_and_no_table(grid_run: GridRun, tmp_path: Path, fmt: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file deleted after the catalog was read: the writer is aborted, nothing claims to be complete."""
    import shutil

    from batchgen.outputs import catalog
    from batchgen.outputs.export import export

    out = tmp_path / "out"
    shutil.copytree(grid_run.out, out)
    cat = catalog.load_catalog(out)
    victim = cat.downloaded()[-1]
    (out / (victim.file or "")).unlink()
    monkeypatch.setattr(catalog.Catalog, "downloaded", lambda self: [r for r in self.records.values() if r.file])
    dest = tmp_path / ("t.parquet" if fmt == "parquet" else "x")
    with pytest.raises(FileNotFoundError):
        export(cat, fmt, dest, with_images=fmt == "parquet")
    assert not (tmp_path / "t.parquet").exists() and not list(tmp_path.glob("*.tmp"))
