"""``batchgen models``: the known models, and a model's parameters with every value, price and latency."""

from __future__ import annotations

import re
import shlex

import pytest

from batchgen.cli import commands as cli
from batchgen.manifest import ManifestError, loads_manifest
from batchgen.models import IDEOGRAM, IDEOGRAM_RESOLUTIONS
from tests.support.models import TOY_SLUG, registered, toy_model


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = cli.main(["models", *args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_models_lists_every_registered_model_with_price_and_latency(capsys: pytest.CaptureFixture[str]) -> None:
    with registered(toy_model()):
        code, lines, err = run(capsys)
    assert code == 0 and err == ""
    assert "  ideogram-txt-2-img  $0.10  ~22 s  (the default)" in lines
    assert any(re.fullmatch(rf"  {TOY_SLUG}\s+\$0\.02  ~3 s", line) for line in lines), lines
    assert "A model's parameters and their values: batchgen models SLUG" in lines


def test_a_model_shows_each_parameter_its_values_price_and_latency(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "ideogram-txt-2-img")
    text = "\n".join(lines)
    assert code == 0
    assert lines[:3] == [
        "ideogram-txt-2-img (the default model)",
        "  price: $0.10 per image (a manifest's price_usd overrides it)",
        "  typical time per image: 21.6 s",
    ]
    rows = {line.split()[0]: line for line in lines if line.startswith("    ") and not line.startswith("     ")}
    assert list(rows) == [p.name for p in IDEOGRAM.params]
    assert rows["prompt"].split(None, 1)[1] == "string, required"
    assert rows["seed"].split(None, 1)[1] == "integer, 100 to 999999"
    assert rows["magic_prompt_option"].split(None, 1)[1] == "string, default AUTO; one of 3: AUTO ON OFF"
    assert "default GENERAL; one of 5: GENERAL REALISTIC DESIGN RENDER_3D ANIME" in rows["style_type"]
    assert "default RESOLUTION_1024_1024; one of 78:" in rows["resolution"]
    assert set(re.findall(r"RESOLUTION_\d+_\d+", text.split("one of 78:")[1])) == set(IDEOGRAM_RESOLUTIONS)
    assert "PASTEL" in text and "color_weight: 0.05-1.0" in text  # the palette's shape, from its note
    assert "at most 10000 characters, no control characters but newline and tab" in lines[-1]
    assert all(len(line) <= 100 for line in lines)


def test_a_second_model_is_described_from_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    with registered(toy_model()):
        code, lines, _ = run(capsys, TOY_SLUG)
    assert code == 0 and lines[0] == TOY_SLUG and "  typical time per image: 3 s" in lines
    text = "\n".join(lines)
    assert "string, default 1:1; one of 3: 1:1 16:9 9:16" in text and "integer, 1 to 50" in text


def test_an_unknown_model_exits_2_with_one_line_and_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "ideogram")
    assert code == 2 and lines == []
    assert err.splitlines() == [
        "batchgen: unknown model 'ideogram'; did you mean 'ideogram-txt-2-img'? (`batchgen models` lists the known models)"
    ]


def test_the_command_a_bad_resolution_names_lists_the_valid_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ManifestError) as info:
        loads_manifest("items:\n  - {prompt: a, resolution: RESOLUTION_1000_1000}\n")
    named = re.search(r"`(batchgen [^`]+)`", info.value.message)
    assert named is not None, info.value.message
    argv = shlex.split(named.group(1))[1:]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert all(r in out for r in IDEOGRAM_RESOLUTIONS)
