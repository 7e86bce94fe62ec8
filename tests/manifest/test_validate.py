"""One validator for inline items and prompts-file rows; the model's entry decides seeds and id parts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from batchgen.manifest import ManifestError, load_manifest, loads_manifest
from batchgen.manifest.expand import derive_seed
from batchgen.manifest.validate import ROWS, YAML, Origin, Rules
from batchgen.models import IDEOGRAM, UNLISTED_SEED_RANGE, ModelSpec, Param
from tests.support.models import TOY_SEEDS, TOY_SLUG, registered, toy_model

# Entries with one mistake each: written as an inline item and as a prompts-file row, the same rule
# must fire with the same field and message, blamed on the YAML line or on the row's line.
MISTAKES: dict[str, dict[str, Any]] = {
    "seed out of range": {"prompt": "a", "seed": 5},
    "missing prompt": {"seed": 500},
    "empty prompt": {"prompt": " "},
    "unknown parameter": {"prompt": "a", "sampler": "euler"},
    "nested palette field": {"prompt": "a", "color_palette": {"members": [{"color_hex": "#12", "color_weight": 0.5}]}},
    "unsafe id": {"prompt": "a", "id": "../x"},
    "id not a string": {"prompt": "a", "id": 12},
    "matrix value refused": {"prompt": "a", "matrix": {"style_type": ["ANIME", "CUBIST"]}},
    "matrix nested value refused": {"prompt": "a", "matrix": {"color_palette": [{"name": "NOPE"}]}},
    "matrix duplicate": {"prompt": "a", "matrix": {"style_type": ["ANIME", "ANIME"]}},
    "matrix axis empty": {"prompt": "a", "matrix": {"style_type": []}},
    "variants zero": {"prompt": "a", "variants": 0},
    "variants too many": {"prompt": "a", "variants": 10001},
    "variants not a number": {"prompt": "a", "variants": "many"},
    "template without id": {"prompt": "a", "id_template": "{style_type}"},
    "template not a string": {"prompt": "a", "id_template": 5},
    "seed with variants": {"prompt": "a", "seed": 500, "variants": 2},
    "template misses an axis": {"prompt": "a", "matrix": {"style_type": ["ANIME"]}, "id_template": "{id}-x"},
}


def _error(path: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value


@pytest.mark.parametrize("case", list(MISTAKES))
def test_items_and_rows_are_held_to_the_same_rules(case: str, tmp_path: Path) -> None:
    entry = json.dumps(MISTAKES[case])
    inline = tmp_path / "inline.yaml"
    inline.write_text(f"name: n\nitems:\n  - {entry}\n")
    rows = tmp_path / "rows.yaml"
    (tmp_path / "p.jsonl").write_text('{"prompt": "fine"}\n' + entry + "\n")
    rows.write_text("name: n\nprompts_file: p.jsonl\n")

    a, b = _error(inline), _error(rows)
    assert (a.path, a.line) == (str(inline), 3)
    assert (b.path, b.line) == (str(tmp_path / "p.jsonl"), 2)
    assert a.field == f"items[0].{b.field}"
    assert a.message.replace("items[0].", "") == b.message


@pytest.mark.parametrize(
    ("entry", "field", "yaml_says", "row_says"),
    [
        ({"prompt": "a", "matrix": ["x"]}, "matrix", "must be a mapping of", "must be an object of"),
        ({"prompt": "a", "matrix": {"prompt": ["x"]}}, "matrix.prompt", "as items or in a prompts_file", "as rows"),
    ],
)
def test_the_same_rule_worded_for_each_file(tmp_path: Path, entry: dict[str, Any], field: str,
                                            yaml_says: str, row_says: str) -> None:
    inline = tmp_path / "inline.yaml"
    inline.write_text(f"items:\n  - {json.dumps(entry)}\n")
    (tmp_path / "p.jsonl").write_text(json.dumps(entry) + "\n")
    rows = tmp_path / "rows.yaml"
    rows.write_text("prompts_file: p.jsonl\n")
    a, b = _error(inline), _error(rows)
    assert (a.line, a.field) == (2, f"items[0].{field}") and yaml_says in a.message
    assert (b.line, b.field) == (1, field) and row_says in b.message


def test_a_mistake_is_blamed_wherever_the_blame_callback_says() -> None:
    asked: list[str] = []

    def locate(field: str) -> tuple[str, int]:
        asked.append(field)
        return "sheet.xlsx", 42

    rules = Rules("m.yaml", IDEOGRAM.slug, IDEOGRAM)
    raw = rules.entry({"prompt": "fine", "seed": 500}, Origin("rows[9]", locate, ROWS), 42, "sheet.xlsx")
    assert raw.params == {"prompt": "fine", "seed": 500} and asked == []  # a valid entry is never located
    with pytest.raises(ManifestError) as info:
        rules.entry({"prompt": "a", "color_palette": {"name": "NOPE"}}, Origin("rows[9]", locate, YAML), 43, None)
    assert str(info.value) == (
        "sheet.xlsx:42: rows[9].color_palette.name: must be one of EMBER, FRESH, JUNGLE, MAGIC, MELON, MOSAIC, "
        "PASTEL, ULTRAMARINE, got 'NOPE'"
    )
    assert asked == ["color_palette.name"]


def test_a_duplicate_id_names_where_the_first_was_set(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "id": "Fox"}\n')
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.jsonl\nitems:\n  - prompt: b\n    id: fox\n")
    e = _error(m)  # inline items come first: the row is the duplicate, and the item is named by its line
    assert (e.path, e.line, e.field) == (str(tmp_path / "p.jsonl"), 1, "id")
    assert "already used by 'fox' on line 4" in e.message
    (tmp_path / "q.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "id": "FOX"}\n')
    n = tmp_path / "n.yaml"
    n.write_text("prompts_file: [p.jsonl, q.jsonl]\n")
    e = _error(n)
    assert (e.path, e.line, e.field) == (str(tmp_path / "q.jsonl"), 2, "id")
    assert f"already used by 'Fox' on {tmp_path / 'p.jsonl'}:1" in e.message


# ----------------------------------------------------------------------------- the model decides


def test_a_second_model_has_its_own_parameters_seeds_and_id_parts(tmp_path: Path) -> None:
    text = textwrap.dedent(f"""\
        model: {TOY_SLUG}
        matrix:
          aspect_ratio: ["1:1", "16:9"]
        variants: 2
        items:
          - id: kite
            prompt: a kite
        prompts_file: p.csv
        """)
    (tmp_path / "p.csv").write_text("prompt,steps\na lantern,20\n")
    (tmp_path / "m.yaml").write_text(text)
    with registered(toy_model()):
        m = load_manifest(tmp_path / "m.yaml")
        assert m.warnings == () and m.price_per_image_usd == 0.02
    kite = [it for it in m.items if it.params["prompt"] == "a kite"]
    assert [it.id for it in kite] == ["kite-1x1-v1", "kite-1x1-v2", "kite-16x9-v1", "kite-16x9-v2"]
    assert kite[0].params["seed"] == derive_seed("kite", 1, TOY_SEEDS)
    assert all(TOY_SEEDS[0] <= it.params["seed"] <= TOY_SEEDS[1] for it in m.items)
    lantern = [it for it in m.items if it.params["prompt"] == "a lantern"]
    assert len(lantern) == 4 and lantern[0].params["steps"] == 20  # the CSV cell typed by the model


@pytest.mark.parametrize(
    ("body", "line", "field", "fragment"),
    [
        ('  - {prompt: a, aspect_ratio: "4:3"}\n', 3, "items[0].aspect_ratio", "must be one of 1:1, 16:9, 9:16"),
        ("  - {prompt: a, resolution: RESOLUTION_1024_1024}\n", 3, "items[0].resolution", "unknown parameter"),
        ("  - {prompt: a, seed: 5000}\n", 3, "items[0].seed", "between 1 and 4095"),
        ('  - {prompt: a, matrix: {aspect_ratio: ["1:1", "2:1"]}}\n', 3, "items[0].matrix.aspect_ratio[1]", "one of"),
    ],
)
def test_a_second_model_refuses_what_its_entry_refuses(body: str, line: int, field: str, fragment: str) -> None:
    with registered(toy_model()), pytest.raises(ManifestError) as info:
        loads_manifest(f"model: {TOY_SLUG}\nitems:\n{body}", "m.yaml")
    e = info.value
    assert (e.line, e.field) == (line, field) and fragment in e.message, str(e)


def test_a_model_without_a_seed_refuses_variants() -> None:
    seedless = ModelSpec("seedless", (Param("prompt", "string", required=True),), 0.01, 1.0)
    with registered(seedless):
        m = loads_manifest("model: seedless\nitems: [a]\n")
        assert len(m.items) == 1
        with pytest.raises(ManifestError) as info:
            loads_manifest("model: seedless\nitems:\n  - prompt: a\n    variants: 2\n", "m.yaml")
        assert (info.value.line, info.value.field) == (4, "items[0].variants")
        assert "no seed parameter" in info.value.message
        with pytest.raises(ManifestError) as info:
            loads_manifest("model: seedless\nvariants: 2\nitems: [a]\n", "m.yaml")
        assert (info.value.line, info.value.field) == (2, "variants")


def test_an_unlisted_model_keeps_its_ids_and_seeds() -> None:
    m = loads_manifest(
        "model: some-other-model\nmatrix: {resolution: [RESOLUTION_1280_720]}\nvariants: 1\nitems: [{id: fox, prompt: a}]\n"
    )
    (it,) = m.items
    assert it.id == "fox-1280x720-v1"
    assert it.params["seed"] == derive_seed("fox", 1, UNLISTED_SEED_RANGE)
