"""The yaml-rs path and the PyYAML path read every manifest the same, or the fast one steps aside."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from batchgen.manifest import ManifestError, loads_manifest
from batchgen.manifest import fast as fast
from batchgen.manifest import loader as manifest

pytestmark = pytest.mark.skipif(not fast.available(), reason="yaml-rs (the fast extra) is not installed")


def typed(v: Any) -> Any:
    """Values with their types spelled out: 1, 1.0 and True are equal in Python but not in a request."""
    if isinstance(v, dict) or hasattr(v, "keys"):
        return {k: typed(v[k]) for k in v}
    if isinstance(v, list | tuple):
        return [typed(x) for x in v]
    return (type(v).__name__, v)


def snapshot(m: Any) -> Any:
    return (
        m.path, m.name, m.model, m.output, m.limits, m.price_usd, m.warnings,
        [(it.id, typed(it.params), it.index, it.line, it.source) for it in m.items],
    )


def both(text: str, monkeypatch: pytest.MonkeyPatch, path: str = "jobs/x.yaml") -> tuple[Any, Any, bool]:
    """(fast result, PyYAML result, whether the fast reading was used)."""
    text = textwrap.dedent(text)
    composed = []
    real = manifest.compose

    def spy(t: str, shown: str) -> Any:
        composed.append(t)
        return real(t, shown)

    def load() -> Any:
        try:
            return snapshot(loads_manifest(text, path))
        except ManifestError as e:
            return ("error", str(e))

    with monkeypatch.context() as mp:
        mp.setattr(manifest, "compose", spy)
        quick = load()
    with monkeypatch.context() as mp:
        mp.setattr(fast, "yaml_rs", None)
        slow = load()
    return quick, slow, not composed


SAME = {
    "flow items": """\
        name: bench
        items:
          - {id: "i1", prompt: "a red fox", seed: 101}
          - {id: "i2", prompt: "a blue fox", seed: 102}
        """,
    "block items, defaults, limits, price": """\
        model: ideogram-txt-2-img
        price_usd: 0.25
        limits: {concurrency: 4, rpm: 50, max_cost_usd: 3, max_images: 10}
        defaults:
          style_type: ANIME
          seed: 500
        items:
          - prompt: one
          - prompt: "two"
            seed: 700
          # a comment between items
          - 'three'
          - >
            folded
            prompt
          - |
            literal prompt
        """,
    "quoted numbers and words stay strings": """\
        model: some-other-model
        items:
          - {prompt: "12", note: '017', flag: "yes", when: "2024-01-01", n: "1e3"}
        """,
    "plain numbers": """\
        model: some-other-model
        items:
          - {prompt: p, a: 0, b: -5, c: 3.5, d: 1., e: -0.0, f: 100}
        """,
    "yaml 1.1 booleans and nulls": """\
        model: some-other-model
        items:
          - {prompt: p, a: yes, b: no, c: on, d: off, e: Yes, f: TRUE, g: ~, h: null, i: }
        """,
    "numbers 1.1 and 1.2 read apart": """\
        model: some-other-model
        items:
          - {prompt: p, a: 017, b: 0o17, c: 1e3, d: 1.5e3, e: +.5, f: 0x1F, g: 1_000, h: 1:30}
        """,
    "anchors and aliases": """\
        model: some-other-model
        defaults: &d {style: x}
        items:
          - {prompt: p, extra: *d}
          - prompt: q
            list: &l [1, 2]
            again: *l
        """,
    "matrix, variants, id template": """\
        matrix:
          style_type: [ANIME, REALISTIC]
        variants: 2
        id_template: "{id}-{style_type}-v{variant}"
        items:
          - {id: fox, prompt: a fox}
          - prompt: an owl
            matrix: {resolution: [RESOLUTION_1024_1024]}
            id_template: "{id}-{style_type}-{resolution}-v{variant}"
        """,
    "items at column zero, escapes, unicode": """\
        items:
        - "tab\\there \\u00e9 \\x41"
        - 'it''s'
        - café au lait
        - prompt: ends with colon text
          negative_prompt: ""
        """,
    "newlines and tabs in prompts, a prompt at the length cap": """\
        items:
          - "two\\nlines and a\\ttab"
          - prompt: |
              block
              scalar
          - "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
        """,
    "items not last, comments": """\
        items:   # the prompts
          - a   # first
          - b
        name: later
        """,
}


@pytest.mark.parametrize("name", list(SAME))
def test_fast_and_pyyaml_paths_agree(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    quick, slow, _ = both(SAME[name], monkeypatch)
    assert quick == slow
    assert quick[0] != "error", quick


@pytest.mark.parametrize("name", ["flow items", "block items, defaults, limits, price", "plain numbers",
                                  "matrix, variants, id template", "items at column zero, escapes, unicode",
                                  "items not last, comments", "newlines and tabs in prompts, a prompt at the length cap"])
def test_plain_manifests_take_the_fast_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert both(SAME[name], monkeypatch)[2]


# A quoted "yes" and a plain yes are the same string to yaml-rs: any string PyYAML would resolve
# when plain is left to PyYAML.
@pytest.mark.parametrize(
    "name",
    ["yaml 1.1 booleans and nulls", "numbers 1.1 and 1.2 read apart", "anchors and aliases",
     "quoted numbers and words stay strings"],
)
def test_ambiguous_manifests_fall_back(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not both(SAME[name], monkeypatch)[2]


ERRORS = {
    "date refused": "items:\n  - {prompt: p, seed: 2024-01-01}\n",
    "duplicate key": "items:\n  - prompt: a\n    prompt: b\n",
    "unknown top key": "name: x\nitem: []\n",
    "bad seed": "items:\n  - prompt: a\n  - {prompt: b, seed: -3}\n",
    "duplicate ids": "items:\n  - {id: a, prompt: x}\n  - {id: A, prompt: y}\n",
    "merge key": "defaults: &d {seed: 5}\nitems:\n  - {<<: *d, prompt: x}\n",
    "syntax": "items:\n  - {prompt: [unclosed\n",
    "not a mapping": "- a\n- b\n",
    "two documents": "items: [a]\n---\nitems: [b]\n",
    "empty": "",
    "non-finite": "model: m\nitems:\n  - {prompt: p, x: .inf}\n",
    "escaped control character": 'items:\n  - "bell \\a and \\e[2J"\n',
    "id with a final newline": 'items:\n  - {id: "a\\n", prompt: p}\n',
    "prompt over the length cap": "items:\n  - " + "p" * 10_001 + "\n",
    "several mistakes": "itme: 1\nlimits: {rps: 2}\nitems:\n  - {prompt: a, seed: 5}\n  - {prompt: b, style_type: anime}\n"
    + "".join(f"  - {{prompt: c{i}, sede: 1}}\n" for i in range(25)),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_mistakes_reported_as_pyyaml_path_reports_them(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    quick, slow, _ = both(ERRORS[name], monkeypatch)
    assert quick == slow
    assert quick[0] == "error"


def test_item_lines_follow_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "name: n\n\nitems:\n\n  - a\n  # c\n  - prompt: b\n    seed: 500\n\n  - |\n    c\n"
    quick, slow, used = both(text, monkeypatch)
    assert used and quick == slow
    assert [row[3] for row in quick[-1]] == [5, 7, 10]


def test_pyyaml_path_alone_loads_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from batchgen.manifest import load_manifest

    monkeypatch.setattr(fast, "yaml_rs", None)
    p = tmp_path / "m.yaml"
    p.write_text("items:\n  - {prompt: a, seed: 101}\n")
    m = load_manifest(p)
    assert [dict(it.params) for it in m.items] == [{"prompt": "a", "seed": 101}]
