"""One small batch run on the in-process sandbox, shared by the export, report and nightly tests.

The manifest uses matrix + prompts_file (.txt and .jsonl) + variants, and one prompt that the
sandbox always fails, so every consumer sees downloaded images and a failure with a reason.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchgen.cli.commands import main

MANIFEST = """\
name: grid
matrix:
  style_type: [REALISTIC, ANIME]
  resolution: [RESOLUTION_512_1536, RESOLUTION_640_1024]
variants: 2
prompts_file: [prompts.txt, prompts.jsonl]
items:
  - id: fox
    prompt: a red fox in the snow
  - id: broken
    prompt: "this one fails [sandbox:fail]"
    style_type: DESIGN
    resolution: RESOLUTION_640_1024
    variants: null
limits:
  concurrency: 16
"""
EXPECTED_ITEMS = 4 * 2 * 2 * 2 + 1  # 4 prompts x 2 styles x 2 resolutions x 2 variants, plus the failing one


@dataclass
class GridRun:
    root: Path
    manifest: Path
    out: Path
    summary: dict[str, Any]
    exit_code: int
    expected_items: int = EXPECTED_ITEMS

    def ledger(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.out / "ledger.jsonl").read_text().splitlines() if line.strip()]

    def downloaded(self) -> dict[str, dict[str, Any]]:
        """item id -> {params, sha256, file, request_id} as the ledger says."""
        out: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {}
        for ev in self.ledger():
            if ev["event"] == "intent":
                params[ev["item"]] = ev["params"]
            if ev["event"] == "downloaded":
                out[ev["item"]] = {"params": params[ev["item"]], "sha256": ev["sha256"], "file": ev["file"],
                                   "request_id": ev["request_id"]}
        return out


@pytest.fixture(scope="session")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> GridRun:
    root = tmp_path_factory.mktemp("grid")
    (root / "prompts.txt").write_text("a lighthouse at dusk\n# skipped\n\na bowl of ramen\n")
    (root / "prompts.jsonl").write_text(
        json.dumps({"id": "owl", "prompt": "an owl", "magic_prompt_option": "OFF", "color_palette": {"name": "EMBER"}})
        + "\n"
    )
    manifest = root / "grid.yaml"
    manifest.write_text(textwrap.dedent(MANIFEST))
    out = root / "out"
    code = main(["run", str(manifest), "--sandbox", "--out", str(out), "--no-progress",
                 "--summary-json", str(root / "summary.json")])
    summary = json.loads((root / "summary.json").read_text())
    return GridRun(root, manifest, out, summary, code)
