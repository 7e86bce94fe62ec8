"""One run reports up to 20 mistakes in file order, each on its own line, and suggests what was meant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.cli import commands as cli
from batchgen.manifest import ManifestError, load_manifest, loads_manifest
from batchgen.manifest.mistakes import MAX_SHOWN
from batchgen.manifest.types import ManifestErrors

LINE = r"^m\.yaml:\d+: \S+: .+$"


def errors_of(text: str, path: str = "m.yaml") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        loads_manifest(text, path)
    return info.value


def test_every_bad_item_is_reported_up_to_twenty_then_a_count() -> None:
    items = "".join(f"  - {{prompt: p{i}, seed: {i}}}\n" for i in range(25))  # seeds below 100
    e = errors_of("items:\n" + items)
    lines = str(e).split("\n")
    assert MAX_SHOWN == 20 and len(lines) == 21 and len(e.errors) == 20
    assert lines[:20] == [f"m.yaml:{i + 2}: items[{i}].seed: must be between 100 and 999999, got {i}" for i in range(20)]
    assert lines[20] == "5 more errors not shown"
    assert isinstance(e, ManifestErrors) and e.more == 5
    assert (e.line, e.field) == (2, "items[0].seed")  # the first mistake, for code that reads one


def test_a_single_mistake_is_one_plain_line() -> None:
    e = errors_of("items:\n  - a\n  - {prompt: b, seed: 7}\n")
    assert e.errors == (e,) and not isinstance(e, ManifestErrors)
    assert str(e) == "m.yaml:3: items[1].seed: must be between 100 and 999999, got 7"


def test_mistakes_are_reported_in_file_order_manifest_first_then_each_prompts_file(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text('{"prompt": "ok"}\nnot json\n{"prompt": "a", "seed": 1}\n')
    (tmp_path / "p.csv").write_text("prompt,style_type\nfine,ANIME\nbad,CUBIST\n")
    m = tmp_path / "m.yaml"
    # the matrix, written last, is checked first; the report still follows the file
    m.write_text(
        "prompts_file: [q.jsonl, p.csv]\nitems:\n  - {prompt: a, sede: 500}\nlimits: {rps: 2}\n"
        "matrix: {style_type: [ANIME, NOPE]}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    where = [(Path(x.path).name, x.line, x.field) for x in info.value.errors]
    assert where == [
        ("m.yaml", 3, "items[0].sede"),
        ("m.yaml", 4, "limits.rps"),
        ("m.yaml", 5, "matrix.style_type[1]"),
        ("q.jsonl", 2, None),
        ("q.jsonl", 3, "seed"),
        ("p.csv", 3, "style_type"),
    ]


def test_every_mistake_of_one_item_is_reported() -> None:
    e = errors_of("items:\n  - prompt: a\n    seed: 5\n    style_type: CUBIST\n    id: ../x\n")
    assert [(x.line, x.field) for x in e.errors] == [(3, "items[0].seed"), (4, "items[0].style_type"),
                                                     (5, "items[0].id")]


def test_a_bad_default_is_reported_once_not_once_per_item() -> None:
    items = "".join(f"  - p{i}\n" for i in range(30))
    e = errors_of("defaults:\n  style_type: CUBIST\nitems:\n" + items)
    assert str(e) == (
        "m.yaml:2: defaults.style_type: must be one of GENERAL, REALISTIC, DESIGN, RENDER_3D, ANIME, got 'CUBIST'"
    )


def test_a_mistake_that_ends_the_reading_comes_with_those_found_before_it() -> None:
    # every rule depends on the model: nothing after it is checked, everything before it is reported
    e = errors_of("name: ../x\nlimits: {concurrency: 0}\nmodel: [not, a, string]\nitms: [a]\n")
    assert [(x.line, x.field) for x in e.errors] == [(1, "name"), (3, "model"), (4, "itms")]


def test_bad_rows_are_all_counted_but_only_twenty_kept(tmp_path: Path) -> None:
    rows = "".join(json.dumps({"prompt": f"p{i}", "seed": 1}) + "\n" for i in range(5000))
    (tmp_path / "p.jsonl").write_text(rows)
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.jsonl\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    e = info.value
    assert [x.line for x in e.errors] == list(range(1, 21))
    assert str(e).split("\n")[-1] == "4980 more errors not shown"


def test_the_command_line_prints_one_line_per_mistake_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("itme: 1\nitems:\n  - {prompt: a, style_type: anime}\n  - {prompt: b, resolution: RESOLUTION_1000_1000}\n")
    code = cli.main(["plan", str(m), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"batchgen: {m}:1: itme: unknown key; did you mean 'items'? (allowed: name, model, output, defaults, items, "
        "limits, price_usd, prompts_file, matrix, variants, id_template)",
        f"batchgen: {m}:3: items[0].style_type: must be one of GENERAL, REALISTIC, DESIGN, RENDER_3D, ANIME, "
        "got 'anime'; did you mean 'ANIME'?",
        f"batchgen: {m}:4: items[1].resolution: unsupported value 'RESOLUTION_1000_1000'; did you mean "
        "'RESOLUTION_1024_1024'? (`batchgen models ideogram-txt-2-img` lists the 78 values)",
    ]


def test_json_logs_carry_one_error_object_per_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMIND_API_KEY", "SG_test_key_never_used")
    m = tmp_path / "m.yaml"
    m.write_text("items:\n  - {prompt: a, seed: 1}\n  - {prompt: b, seed: 2}\n")
    code = cli.main(["run", str(m), "--out", str(tmp_path / "out"), "--log-format", "json"])
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert code == 2
    assert [(e["level"], e["message"]) for e in events] == [
        ("error", f"{m}:2: items[0].seed: must be between 100 and 999999, got 1"),
        ("error", f"{m}:3: items[1].seed: must be between 100 and 999999, got 2"),
    ]


# ----------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    ("item", "field", "hint"),
    [
        ("{prompt: a, sede: 500}", "items[0].sede", "did you mean 'seed'?"),
        ("{prompt: a, negativeprompt: x}", "items[0].negativeprompt", "did you mean 'negative_prompt'?"),
        ("{prompt: a, style_type: REALSTIC}", "items[0].style_type", "did you mean 'REALISTIC'?"),
        ("{prompt: a, magic_prompt_option: of}", "items[0].magic_prompt_option", "did you mean 'OFF'?"),
        ("{prompt: a, resolution: RESOLUTION_1280_721}", "items[0].resolution", "did you mean 'RESOLUTION_1280_720'?"),
        ("{prompt: a, resolution: resolution_1024_768}", "items[0].resolution", "did you mean 'RESOLUTION_1024_768'?"),
        ("{prompt: a, color_palette: {name: EMBR}}", "items[0].color_palette.name", "did you mean 'EMBER'?"),
    ],
)
def test_near_misses_get_a_suggestion(item: str, field: str, hint: str) -> None:
    e = errors_of(f"items:\n  - {item}\n")
    assert e.field == field and hint in e.message, str(e)


@pytest.mark.parametrize(
    "item",
    ["{prompt: a, style_type: CUBIST}", "{prompt: a, resolution: RESOLUTION_1920_1080}", "{prompt: a, zzz: 1}"],
)
def test_no_suggestion_when_nothing_is_close_or_two_are_equally_close(item: str) -> None:
    assert "did you mean" not in errors_of(f"items:\n  - {item}\n").message


def test_every_unsupported_resolution_says_how_to_list_the_values() -> None:
    e = errors_of("items:\n  - {prompt: a, resolution: 1920x1080}\n")
    assert e.message == (
        "unsupported value '1920x1080' (`batchgen models ideogram-txt-2-img` lists the 78 values)"
    )


def test_an_unknown_model_near_a_known_one_is_named_in_the_warning() -> None:
    m = loads_manifest("model: ideogram-txt2img\nitems: [a]\n")
    assert m.warnings == (
        "unknown model 'ideogram-txt2img': parameters are passed through unvalidated (did you mean "
        "'ideogram-txt-2-img'? `batchgen models` lists the known models)",
    )
    assert loads_manifest("model: flux-schnell\nitems: [a]\n").warnings == (
        "unknown model 'flux-schnell': parameters are passed through unvalidated",
    )
