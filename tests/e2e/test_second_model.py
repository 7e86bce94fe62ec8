"""Adding a model is one entry: a test-only model with other parameters runs end to end on the sandbox.

The toy model (tests/support/models.py) has no ``resolution``: its image size comes from
``aspect_ratio``, its seeds from its own range, its ids spell ``16:9`` as ``16x9`` and the report
filters by aspect ratio. Nothing else in the package is told about it.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgen.cli import main
from batchgen.models import MODELS, get_model
from tests.support.images import png_size
from tests.support.models import ASPECT_SIZES, TOY_SEEDS, TOY_SLUG, registered, toy_model

MANIFEST = f"""\
name: toy
model: {TOY_SLUG}
matrix:
  aspect_ratio: ["1:1", "16:9"]
variants: 2
items:
  - id: kite
    prompt: a kite over the sea
  - id: lantern
    prompt: a paper lantern
    steps: 20
"""


@pytest.fixture
def toy() -> Iterator[None]:
    before = dict(MODELS)
    with registered(toy_model()):
        yield
    assert MODELS == before and get_model(TOY_SLUG) is None


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines() if line.strip()]


def test_a_second_model_runs_end_to_end_on_the_sandbox(toy: None, tmp_path: Path) -> None:
    manifest = tmp_path / "toy.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    code = main(["run", str(manifest), "--sandbox", "--out", str(out), "--no-progress",
                 "--summary-json", str(tmp_path / "summary.json")])
    assert code == 0

    events = _events(out)
    params = {e["item"]: e["params"] for e in events if e["event"] == "intent"}
    downloaded = {e["item"]: e for e in events if e["event"] == "downloaded"}
    expected = {f"{name}-{aspect}-v{v}" for name in ("kite", "lantern") for aspect in ("1x1", "16x9") for v in (1, 2)}
    assert set(params) == set(downloaded) == expected
    for item, p in params.items():
        assert set(p) <= {"prompt", "aspect_ratio", "steps", "seed"}
        assert p["aspect_ratio"] == ("16:9" if "-16x9-" in item else "1:1")
        assert TOY_SEEDS[0] <= p["seed"] <= TOY_SEEDS[1]
        assert png_size(out / downloaded[item]["file"]) == ASPECT_SIZES[p["aspect_ratio"]]
    assert params["lantern-16x9-v2"]["steps"] == 20
    assert params["kite-1x1-v1"]["seed"] == params["kite-16x9-v1"]["seed"]  # one seed per variant
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["spent_usd"] == pytest.approx(8 * 0.02)  # the entry's price

    report = tmp_path / "report.html"
    assert main(["report", str(out), "--to", str(report)]) == 0
    page = report.read_text()
    assert '<select id="f-aspect">' in page and 'data-aspect="16:9"' in page
    assert 'id="f-style"' not in page and 'id="f-res"' not in page  # Ideogram's filters: no such parameters here


def test_a_bad_value_for_the_new_parameter_is_refused_before_any_request(
    toy: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "toy.yaml"
    manifest.write_text(textwrap.dedent(f"""\
        model: {TOY_SLUG}
        items:
          - prompt: a kite
          - prompt: a lantern
            aspect_ratio: "4:3"
        """))
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--sandbox", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"batchgen: {manifest}:5: items[1].aspect_ratio: must be one of 1:1, 16:9, 9:16, got '4:3'"]
    assert not (out / "ledger.jsonl").exists()
