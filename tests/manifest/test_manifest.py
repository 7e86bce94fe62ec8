"""Manifest loading: every user mistake becomes one line naming file, line and field."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml

from batchgen.manifest import (
    DEFAULT_MODEL,
    MAX_MANIFEST_BYTES,
    Limits,
    ManifestError,
    load_manifest,
    loads_manifest,
)


def load(text: str, path: str = "jobs/x.yaml"):
    return loads_manifest(textwrap.dedent(text), path)


def error(text: str, path: str = "jobs/x.yaml") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load(text, path)
    msg = str(info.value)
    assert "\n" not in msg
    return info.value


# ----------------------------------------------------------------------------- happy paths

DESIGN_EXAMPLE = """\
name: posters            # optional, default: file stem
model: ideogram-txt-2-img
output: out/posters      # optional, default out/<name>
defaults:                # merged under every item
  resolution: RESOLUTION_1024_1024
  style_type: DESIGN
  negative_prompt: "low quality,blurry"
items:
  - id: stay-calm        # optional; default derived from position and prompt
    prompt: "A poster that says 'Stay calm and use Segmind'"
    seed: 56698
  - prompt: "A watercolor fox in the snow"
limits:                  # optional; flags override
  concurrency: 8
  rpm: 60
  max_cost_usd: 5.00
"""


def test_design_example_loads() -> None:
    m = loads_manifest(DESIGN_EXAMPLE, "jobs/posters.yaml")
    assert m.name == "posters"
    assert m.model == "ideogram-txt-2-img"
    assert m.output == Path("out/posters")
    assert m.limits == Limits(concurrency=8, rpm=60.0, max_cost_usd=5.0)
    assert m.price_usd is None
    assert m.price_per_image_usd == pytest.approx(0.10)
    assert m.warnings == ()
    first, second = m.items
    assert (first.id, first.index, first.line) == ("stay-calm", 0, 9)
    assert dict(first.params) == {
        "resolution": "RESOLUTION_1024_1024",
        "style_type": "DESIGN",
        "negative_prompt": "low quality,blurry",
        "prompt": "A poster that says 'Stay calm and use Segmind'",
        "seed": 56698,
    }
    assert second.line == 12 and second.id.startswith("a-watercolor-fox-in-the-snow-")


def test_defaults_merge_item_wins_shallow() -> None:
    m = load(
        """
        defaults:
          style_type: DESIGN
          seed: 500
          color_palette: {name: EMBER}
        items:
          - prompt: a
            seed: 600
            color_palette: {members: [{color_hex: "#112233", color_weight: 0.5}]}
          - prompt: b
        """
    )
    a, b = m.items
    assert dict(a.params) == {
        "style_type": "DESIGN",
        "seed": 600,
        "color_palette": {"members": [{"color_hex": "#112233", "color_weight": 0.5}]},
        "prompt": "a",
    }
    assert dict(b.params) == {
        "style_type": "DESIGN",
        "seed": 500,
        "color_palette": {"name": "EMBER"},
        "prompt": "b",
    }
    with pytest.raises(TypeError):
        a.params["seed"] = 1  # type: ignore[index]


def test_defaults_name_model_output_and_bare_string_items() -> None:
    m = load("items: [hello world, 'second one']\n", "jobs/night run.yaml")
    assert m.model == DEFAULT_MODEL
    assert m.name == "night-run"  # the stem made safe as a folder name
    assert m.output == Path("out") / "night-run"
    assert [dict(i.params) for i in m.items] == [{"prompt": "hello world"}, {"prompt": "second one"}]
    assert m.items[0].id.startswith("hello-world-")
    assert m.limits == Limits()


def test_price_override_and_limits_all_keys() -> None:
    m = load(
        """
        price_usd: 0.08
        limits: {concurrency: 1, rpm: 0.5, max_cost_usd: 0, max_images: 0}
        items: [x]
        """
    )
    assert m.price_usd == 0.08 and m.price_per_image_usd == 0.08
    assert m.limits == Limits(concurrency=1, rpm=0.5, max_cost_usd=0.0, max_images=0)


def test_load_manifest_from_file_and_default_name_from_stem(tmp_path: Path) -> None:
    p = tmp_path / "posters.yaml"
    p.write_text("items:\n  - prompt: a fox\n", encoding="utf-8")
    m = load_manifest(p)
    assert m.path == p and m.name == "posters" and m.output == Path("out/posters")


def test_utf8_bom_and_unicode_prompt(tmp_path: Path) -> None:
    p = tmp_path / "u.yaml"
    p.write_bytes("\ufeffitems:\n  - prompt: 雪の中の狐\n".encode())
    m = load_manifest(p)
    assert m.items[0].params["prompt"] == "雪の中の狐"
    assert m.items[0].id.startswith("item-")  # nothing ASCII to slug


# ----------------------------------------------------------------------------- derived ids


def test_derived_ids_stable_when_prompt_inserted_before() -> None:
    before = load("items: [a red fox, a blue whale, a green frog]\n")
    after = load("items: [a new first one, a red fox, a blue whale, something between, a green frog]\n")
    old = {i.params["prompt"]: i.id for i in before.items}
    new = {i.params["prompt"]: i.id for i in after.items}
    for prompt, item_id in old.items():
        assert new[prompt] == item_id
    assert len(set(new.values())) == 5


def test_derived_id_depends_on_params_and_shape() -> None:
    m = load(
        """
        items:
          - {prompt: "Hello, World! This is a rather long prompt that goes past forty chars", seed: 100}
          - {prompt: "Hello, World! This is a rather long prompt that goes past forty chars", seed: 101}
        """
    )
    a, b = (i.id for i in m.items)
    slug, digest = a.rsplit("-", 1)
    assert slug == "hello-world-this-is-a-rather-long-prompt"
    assert len(slug) <= 40 and len(digest) == 8 and int(digest, 16) >= 0
    assert a != b and b.startswith(slug + "-")


def test_duplicate_identical_items_get_numbered_suffixes() -> None:
    m = load("items: [same, other, same, same]\n")
    ids = [i.id for i in m.items]
    assert ids[2] == ids[0] + "-2" and ids[3] == ids[0] + "-3"
    assert len(set(ids)) == 4


def test_defaults_change_changes_derived_ids() -> None:
    a = load("items: [fox]\n").items[0].id
    b = load("defaults: {style_type: ANIME}\nitems: [fox]\n").items[0].id
    assert a != b


# ----------------------------------------------------------------------------- explicit ids


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a/b",
        "/etc/passwd",
        "a\\\\b",
        "a\\0b",
        ".hidden",
        ".",
        "..",
        "has space",
        "",
        "x" * 101,
        "CON",
        "nul",
        "com1",
        "LPT9.png",
        "aux.tar.gz",
    ],
)
def test_unsafe_explicit_ids_refused(bad: str) -> None:
    e = error(f'items:\n  - id: "{bad}"\n    prompt: fox\n')
    assert e.line == 2 and e.field == "items[0].id"
    assert str(e).startswith("jobs/x.yaml:2: items[0].id: ")


def test_explicit_id_must_be_string() -> None:
    e = error("items:\n  - id: 12\n    prompt: fox\n")
    assert (e.line, e.field) == (2, "items[0].id") and "string" in e.message


def test_explicit_id_limits_accepted() -> None:
    m = load(
        f"items:\n  - {{id: {'a' * 100}, prompt: x}}\n  - {{id: a.b_c-1, prompt: y}}\n  - {{id: CONSOLE, prompt: z}}\n"
    )
    assert [i.id for i in m.items] == ["a" * 100, "a.b_c-1", "CONSOLE"]


def test_explicit_ids_unique_case_insensitively() -> None:
    e = error(
        """\
        items:
          - id: Fox
            prompt: a
          - id: bird
            prompt: b
          - id: fox
            prompt: c
        """
    )
    assert e.line == 6 and e.field == "items[2].id"
    assert "line 2" in e.message and "Fox" in e.message


def test_derived_id_never_takes_an_explicit_id() -> None:
    first = load("items: [fox]\n").items[0].id
    m = load(f"items:\n  - fox\n  - {{id: {first.upper()}, prompt: other}}\n")
    assert m.items[0].id == first + "-2"
    assert m.items[1].id == first.upper()


# ----------------------------------------------------------------------------- parameter rules


@pytest.mark.parametrize(
    ("item_yaml", "line", "field", "fragment"),
    [
        ("- seed: 500", 2, "items[0].prompt", "required"),
        ('- prompt: ""', 2, "items[0].prompt", "empty"),
        ('- prompt: "   "', 2, "items[0].prompt", "empty"),
        ("- prompt: 12", 2, "items[0].prompt", "string"),
        ("- prompt: [a, b]", 2, "items[0].prompt", "string"),
        ("- prompt: a\n  magic_prompt_option: MAYBE", 3, "items[0].magic_prompt_option", "AUTO"),
        ("- prompt: a\n  resolution: RESOLUTION_1000_1000", 3, "items[0].resolution", "unsupported"),
        ("- prompt: a\n  style_type: CUBIST", 3, "items[0].style_type", "GENERAL"),
        ("- prompt: a\n  seed: 42", 3, "items[0].seed", "must be between 100 and 999999, got 42"),
        ("- prompt: a\n  seed: 1000000", 3, "items[0].seed", "between"),
        ("- prompt: a\n  seed: abc", 3, "items[0].seed", "must be an integer"),
        ('- prompt: a\n  seed: "42"', 3, "items[0].seed", "must be an integer"),
        ("- prompt: a\n  seed: 4.5e2", 3, "items[0].seed", "must be an integer"),
        ("- prompt: a\n  seed: true", 3, "items[0].seed", "must be an integer"),
        ("- prompt: a\n  colour: red", 3, "items[0].colour", "unknown parameter"),
        (
            "- prompt: a\n  color_palette:\n    name: BEIGE",
            4,
            "items[0].color_palette.name",
            "EMBER",
        ),
        (
            '- prompt: a\n  color_palette:\n    members:\n      - {color_hex: "#aabbcc", color_weight: 0.5}\n'
            '      - {color_hex: "#aabbc", color_weight: 0.5}',
            6,
            "items[0].color_palette.members[1].color_hex",
            "#RRGGBB",
        ),
        (
            '- prompt: a\n  color_palette:\n    members:\n      - color_hex: "#aabbcc"\n        color_weight: 0.01',
            6,
            "items[0].color_palette.members[0].color_weight",
            "0.05",
        ),
        (
            '- prompt: a\n  color_palette:\n    members:\n      - color_hex: "#aabbcc"\n        color_weight: 2',
            6,
            "items[0].color_palette.members[0].color_weight",
            "0.05",
        ),
        (
            '- prompt: a\n  color_palette:\n    name: EMBER\n    members: [{color_hex: "#aabbcc", color_weight: 1}]',
            3,
            "items[0].color_palette",
            "not both",
        ),
        ("- prompt: a\n  color_palette: EMBER", 3, "items[0].color_palette", "object"),
    ],
)
def test_each_parameter_rule(item_yaml: str, line: int, field: str, fragment: str) -> None:
    text = "items:\n" + textwrap.indent(item_yaml, "  ") + "\n"
    e = error(text)
    assert (e.line, e.field) == (line, field), str(e)
    assert fragment in e.message
    assert str(e).startswith(f"jobs/x.yaml:{line}: {field}: ")


def test_error_points_at_the_right_item() -> None:
    e = error("items:\n  - a\n  - b\n  - prompt: c\n    seed: 7\n")
    assert str(e) == "jobs/x.yaml:5: items[2].seed: must be between 100 and 999999, got 7"


def test_scalar_value_on_its_own_line_is_blamed() -> None:
    e = error("items:\n  - prompt: a\n    seed:\n      42\n")
    assert (e.line, e.field) == (4, "items[0].seed")


def test_bad_default_reported_at_defaults_line() -> None:
    e = error("defaults:\n  prompt: fine\n  style_type: NOPE\nitems: [a]\n")
    assert (e.line, e.field) == (3, "defaults.style_type")


def test_bad_default_nested_field() -> None:
    e = error(
        'defaults:\n  color_palette:\n    members:\n      - {color_hex: "#zzzzzz", color_weight: 1}\nitems: [a]\n'
    )
    assert (e.line, e.field) == (4, "defaults.color_palette.members[0].color_hex")


def test_prompt_from_defaults_satisfies_required() -> None:
    m = load("defaults: {prompt: shared}\nitems:\n  - seed: 100\n  - seed: 101\n")
    assert [i.params["prompt"] for i in m.items] == ["shared", "shared"]


def test_id_in_defaults_refused() -> None:
    e = error("defaults: {id: x}\nitems: [a]\n")
    assert e.field == "defaults.id" and e.line == 1


def test_item_of_wrong_kind() -> None:
    e = error("items:\n  - a\n  - [x, y]\n")
    assert (e.line, e.field) == (3, "items[1]")
    e = error("items:\n  - a\n  -\n")
    assert e.field == "items[1]"


def test_unknown_model_passes_params_through_with_warning() -> None:
    m = load(
        "model: some-other-model\nitems:\n  - prompt: a\n    steps: 30\n    seed: 1\n    weird: {x: [1, 2]}\n"
    )
    assert dict(m.items[0].params) == {"prompt": "a", "steps": 30, "seed": 1, "weird": {"x": [1, 2]}}
    assert len(m.warnings) == 1 and "some-other-model" in m.warnings[0]
    assert m.price_per_image_usd is None


@pytest.mark.parametrize("item", ["- steps: 30", "- prompt: ''", "- prompt: 5"])
def test_unknown_model_still_needs_a_prompt(item: str) -> None:
    e = error(f"model: other\nitems:\n  {item}\n")
    assert (e.line, e.field) == (3, "items[0].prompt")


# ----------------------------------------------------------------------------- top-level structure


def test_unknown_top_level_key() -> None:
    e = error("items: [a]\n\nitem: [b]\n")
    assert (e.line, e.field) == (3, "item") and "unknown key" in e.message


def test_unknown_limits_key() -> None:
    e = error("items: [a]\nlimits:\n  concurrency: 2\n  rps: 4\n")
    assert (e.line, e.field) == (4, "limits.rps") and "unknown key" in e.message


def test_duplicate_key_refused() -> None:
    e = error("items:\n  - prompt: a\n    seed: 100\n    seed: 200\n")
    assert (e.line, e.field) == (4, "items[0].seed") and "line 3" in e.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\n", None),
        ("items: []\n", 1),
        ("items:\n", 1),
        ("items: {prompt: a}\n", 1),
        ("items: just one\n", 1),
    ],
)
def test_items_missing_empty_or_not_a_list(text: str, line: int | None) -> None:
    e = error(text)
    assert e.field == "items" and e.line == line


@pytest.mark.parametrize(
    ("limits", "field", "fragment"),
    [
        ("concurrency: 0", "limits.concurrency", "at least 1"),
        ("concurrency: 2.5", "limits.concurrency", "integer"),
        ("concurrency: '4'", "limits.concurrency", "integer"),
        ("concurrency: true", "limits.concurrency", "integer"),
        ("rpm: 0", "limits.rpm", "greater than 0"),
        ("rpm: fast", "limits.rpm", "number"),
        ("rpm: .inf", "limits.rpm", "finite"),
        ("max_cost_usd: -1", "limits.max_cost_usd", "at least 0"),
        ("max_cost_usd: '5'", "limits.max_cost_usd", "number"),
        ("max_images: 1.5", "limits.max_images", "integer"),
        ("max_images: -3", "limits.max_images", "at least 0"),
    ],
)
def test_limits_wrong_types_and_ranges(limits: str, field: str, fragment: str) -> None:
    e = error(f"items: [a]\nlimits:\n  {limits}\n")
    assert (e.line, e.field) == (3, field) and fragment in e.message


def test_limits_not_a_mapping() -> None:
    e = error("items: [a]\nlimits: 5\n")
    assert (e.line, e.field) == (2, "limits")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: ../evil\nitems: [a]\n", "name"),
        ("name: 'my run'\nitems: [a]\n", "name"),
        ("name: 5\nitems: [a]\n", "name"),
        ("model: ''\nitems: [a]\n", "model"),
        ("output: 3\nitems: [a]\n", "output"),
        ("price_usd: 0\nitems: [a]\n", "price_usd"),
        ("price_usd: cheap\nitems: [a]\n", "price_usd"),
    ],
)
def test_top_level_values(text: str, field: str) -> None:
    e = error(text)
    assert (e.line, e.field) == (1, field)


def test_top_level_not_a_mapping() -> None:
    e = error("- a\n- b\n")
    assert e.line == 1 and "mapping" in e.message


# ----------------------------------------------------------------------------- YAML and file problems


def test_yaml_syntax_error_has_line() -> None:
    e = error("items:\n  - prompt: a\n  - prompt: [unclosed\n    seed: 100\nlimits: {\n")
    assert e.line is not None and e.line >= 3
    assert "YAML syntax error" in e.message


def test_yaml_bad_indentation_line() -> None:
    e = error('items:\n  - prompt: "a"\n   seed: 100\n')
    assert e.line == 3 and str(e).startswith("jobs/x.yaml:3: YAML syntax error")


def test_two_documents_refused() -> None:
    e = error("items: [a]\n---\nitems: [b]\n")
    assert e.line == 2


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "e.yaml"
    p.write_text("", encoding="utf-8")
    with pytest.raises(ManifestError, match="empty"):
        load_manifest(p)
    with pytest.raises(ManifestError, match="empty"):
        loads_manifest("# only a comment\n")


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("items:\n  - prompt: café\n".encode("latin-1"))
    with pytest.raises(ManifestError) as info:
        load_manifest(p)
    assert info.value.line == 2 and "UTF-8" in info.value.message
    assert str(info.value).startswith(f"{p}:2: ")


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    with pytest.raises(ManifestError) as info:
        load_manifest(p)
    assert info.value.line is None and str(info.value) == f"{p}: no such file"


def test_directory_is_not_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.line is None


def test_too_large_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    with p.open("wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ManifestError, match="too large"):
        load_manifest(p)


@pytest.mark.parametrize(
    "text",
    [
        "items:\n  - prompt: !!python/object/apply:os.system ['echo hacked']\n",
        "items:\n  - !!python/object:collections.OrderedDict {}\n",
        "items: !!python/name:os.system\n",
    ],
)
def test_python_tags_refused(text: str, capfd: pytest.CaptureFixture[str]) -> None:
    e = error(text)
    assert "unsupported YAML type" in e.message and "python" in e.message
    assert "hacked" not in capfd.readouterr().out


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("2024-01-01", "timestamp"), ("!!binary aGVsbG8=", "binary"), ("!!set {a: null}", "set")],
)
def test_other_yaml_types_refused(value: str, fragment: str) -> None:
    e = error(f"items:\n  - prompt: {value}\n")
    assert (e.line, e.field) == (2, "items[0].prompt") and fragment in e.message


def test_yaml_11_typing_of_scalars() -> None:
    m = load(
        "model: x\nitems:\n  - {prompt: a, i: 0x1F, o: 017, h: '0o17', f: 1_000.5, b: yes, n: ~, s: '0x1F', e: 1e3}\n"
    )
    p = m.items[0].params
    assert p["i"] == 31 and isinstance(p["i"], int)
    assert p["o"] == 15 and p["h"] == "0o17"
    assert p["f"] == 1000.5
    assert p["b"] is True and p["n"] is None and p["s"] == "0x1F"
    assert p["e"] == "1e3"  # YAML 1.1: no dot, so not a float


def test_scalars_typed_exactly_as_safe_load() -> None:
    doc = (
        "model: x\nitems:\n  - prompt: a\n    v: [1, -2, +3, 0b101, 1_000, 0x_1F, 12:30, 1.5, -.5, 6.8523015e+5,"
        " ~, null, Null, NO, off, On, Y, '', \"\\u00e9\", 3., 2001:db8, '7']\n"
    )
    assert load(doc).items[0].params["v"] == yaml.safe_load(doc)["items"][0]["v"]


def test_unreadable_character_reported_with_line() -> None:
    e = error("items:\n  - a\n  - prompt: bell\x07\n")
    assert e.line == 3 and "unacceptable character" in e.message


def test_item_that_yaml_reads_as_boolean_gets_a_hint() -> None:
    e = error("items:\n  - yes\n")
    assert (e.line, e.field) == (2, "items[0]") and "quote" in e.message


def test_non_string_keys_refused() -> None:
    e = error("items:\n  - prompt: a\n    1: b\n")
    assert e.line == 3 and "keys must be strings" in e.message


def test_merge_keys_refused_clearly() -> None:
    with pytest.raises(ManifestError) as info:
        load("x: &base {style_type: DESIGN}\nitems:\n  - <<: *base\n    prompt: a\n")
    # 'x' is an unknown key: reported first, on its line; the merge key after it, on its own
    first, second = info.value.errors
    assert info.value.line == 1 and (first.line, first.field) == (1, "x") and "unknown key" in first.message
    assert second.line == 3 and "merge" in second.message
    assert str(info.value).splitlines() == [str(first), str(second)]
    e = error("items:\n  - &a {prompt: p}\n  - <<: *a\n    seed: 100\n")
    assert e.line == 3 and "merge" in e.message


def test_aliases_share_values() -> None:
    m = load(
        """
        items:
          - prompt: a
            color_palette: &warm {members: [{color_hex: "#ff0000", color_weight: 1}]}
          - prompt: b
            color_palette: *warm
        """
    )
    assert m.items[0].params["color_palette"] == m.items[1].params["color_palette"]


def test_alias_bomb_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    body = "\n".join("    " + line for line in lines)
    text = f"model: other\nitems:\n  - prompt: boom\n    bomb:\n{body}\n"
    start = time.perf_counter()
    with pytest.raises(ManifestError, match="too large"):
        loads_manifest(text)
    assert time.perf_counter() - start < 5


def test_recursive_alias_refused() -> None:
    e = error("model: other\nitems:\n  - prompt: a\n    loop: &l [1, *l]\n")
    assert "recursive" in e.message


# ----------------------------------------------------------------------------- scale


def test_ten_thousand_items_load_fast() -> None:
    lines = ["defaults:", "  style_type: DESIGN", "  negative_prompt: blurry", "items:"]
    for i in range(10_000):
        lines += [
            f'  - prompt: "A watercolor fox number {i} in the snow"',
            f"    seed: {100 + i}",
            "    resolution: RESOLUTION_1024_768",
        ]
    text = "\n".join(lines) + "\n"
    start = time.perf_counter()
    m = loads_manifest(text, "big.yaml")
    elapsed = time.perf_counter() - start
    print(f"\n10,000-item manifest loaded and validated in {elapsed:.3f} s")
    assert len(m.items) == 10_000 and len({i.id for i in m.items}) == 10_000
    assert m.items[-1].line == 4 + 3 * 9_999 + 1
    assert elapsed < 5


# ----------------------------------------------------------------------------- matrix, variants, prompts files


def write_manifest(tmp_path: Path, text: str, **files: str) -> Path:
    for name, content in files.items():
        (tmp_path / name.replace("_", ".", 1)).write_text(textwrap.dedent(content))
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_matrix_and_variants_expand_with_readable_stable_ids() -> None:
    m = load(
        """
        matrix:
          style_type: [REALISTIC, ANIME]
          resolution: [RESOLUTION_1024_1024, RESOLUTION_1280_720]
        variants: 2
        items:
          - {id: fox, prompt: a fox}
        """
    )
    ids = [it.id for it in m.items]
    assert len(ids) == 8 and ids[0] == "fox-realistic-1024x1024-v1" and ids[-1] == "fox-anime-1280x720-v2"
    seeds = {it.id: it.params["seed"] for it in m.items}
    # one seed per variant, shared across the grid, inside the model's range
    assert seeds["fox-realistic-1024x1024-v1"] == seeds["fox-anime-1280x720-v1"] != seeds["fox-anime-1280x720-v2"]
    assert all(100 <= s <= 999999 for s in seeds.values())
    again = load(
        """
        matrix:
          style_type: [REALISTIC, ANIME, DESIGN]
          resolution: [RESOLUTION_1024_1024, RESOLUTION_1280_720]
        variants: 3
        items:
          - {id: fox, prompt: a fox}
        """
    )
    before = {it.id: dict(it.params) for it in m.items}
    after = {it.id: dict(it.params) for it in again.items}
    assert all(after[k] == v for k, v in before.items())  # growing the grid keeps every old item
    assert len(after) == 18


def test_item_values_win_over_axes_and_item_matrix_replaces_axis() -> None:
    m = load(
        """
        matrix: {style_type: [REALISTIC, ANIME]}
        items:
          - {prompt: fixed, style_type: DESIGN}
          - prompt: own
            matrix: {style_type: [GENERAL], magic_prompt_option: ["ON", "OFF"]}
          - prompt: plain
            matrix: null
        """
    )
    styles = [(it.params["prompt"], it.params["style_type"]) for it in m.items if "style_type" in it.params]
    assert styles[0] == ("fixed", "DESIGN")
    assert [s for p, s in styles if p == "own"] == ["GENERAL", "GENERAL"]
    assert sum(1 for it in m.items if it.params["prompt"] == "plain") == 2  # null keeps the top level's


def test_id_template() -> None:
    m = load(
        """
        matrix: {style_type: [ANIME]}
        variants: 2
        id_template: "{id}_{style_type}_n{variant}"
        items: [{id: cat, prompt: a cat}]
        """
    )
    assert [it.id for it in m.items] == ["cat_anime_n1", "cat_anime_n2"]


def test_editing_one_prompt_changes_only_its_items(tmp_path: Path) -> None:
    body = "matrix: {style_type: [ANIME, DESIGN]}\nvariants: 2\nprompts_file: p.txt\n"
    p = write_manifest(tmp_path, body, p_txt="a cat\na dog\n")
    first = {it.id for it in load_manifest(p).items}
    (tmp_path / "p.txt").write_text("a cat\na wolf\na dog\nan owl\n")
    second = {it.id for it in load_manifest(p).items}
    assert len(first) == 8 and len(second) == 16 and first <= second
    (tmp_path / "p.txt").write_text("a cat!\na wolf\na dog\nan owl\n")
    third = {it.id for it in load_manifest(p).items}
    assert len(second - third) == 4 and len(third - second) == 4


def test_prompts_files_txt_jsonl_csv(tmp_path: Path) -> None:
    p = write_manifest(
        tmp_path,
        """
        defaults: {style_type: DESIGN}
        prompts_file: [p.txt, sub/p.jsonl, p.csv]
        items: [inline prompt]
        """,
        p_txt="# a comment\n\nfirst line prompt\nsecond\n",
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/p.jsonl").write_text('{"prompt": "owl", "id": "owl", "seed": 1234}\n\n{"prompt": "eel", "variants": 2}\n')
    (tmp_path / "p.csv").write_text('prompt,id,seed,color_palette\n"a, quoted",q1,555,"{""name"": ""EMBER""}"\nplain,,,\n')
    m = load_manifest(p)
    got = [(it.source and Path(it.source).name, it.line, it.params["prompt"]) for it in m.items]
    assert got[:3] == [(None, 4, "inline prompt"), ("p.txt", 3, "first line prompt"), ("p.txt", 4, "second")]
    by_prompt = {it.params["prompt"]: it for it in m.items}
    assert by_prompt["owl"].id == "owl" and by_prompt["owl"].params == {"style_type": "DESIGN", "prompt": "owl", "seed": 1234}
    assert sum(1 for it in m.items if it.params["prompt"] == "eel") == 2
    assert by_prompt["a, quoted"].params["seed"] == 555 and by_prompt["a, quoted"].params["color_palette"] == {"name": "EMBER"}
    assert by_prompt["plain"].line == 3 and "seed" not in by_prompt["plain"].params


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "fragment"),
    [
        ("p.txt", "", None, None, "no prompts"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "seed": 5}\n', 2, "seed", "between"),
        ("p.jsonl", '{"prompt": "a"}\nnot json\n', 2, None, "JSON"),
        ("p.jsonl", '["a"]\n', 1, None, "object"),
        ("p.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "X"}\n', 2, "id", "p.jsonl:1"),
        ("p.jsonl", '{"prompt": "a", "colour": 1}\n', 1, "colour", "unknown parameter"),
        ("p.csv", "prompt,seed\na,12x\n", 2, "seed", "integer"),
        ("p.csv", "text,seed\na,1\n", 1, None, "'prompt' column"),
        ("p.csv", "prompt,style_type\na,GENERAL\n\nb,WEIRD\n", 4, "style_type", "one of"),
    ],
)
def test_prompts_file_errors_name_the_file_and_line(
    tmp_path: Path, name: str, content: str, line: int | None, field: str | None, fragment: str
) -> None:
    p = write_manifest(tmp_path, f"prompts_file: {name}\n")
    (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError) as info:
        load_manifest(p)
    e = info.value
    if line is None:
        assert (e.path, e.line, e.field) == (str(p), 1, "prompts_file")
    else:
        assert (e.path, e.line, e.field) == (str(tmp_path / name), line, field)
    assert fragment in e.message


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        ("prompts_file: nope.txt\n", 1, "prompts_file", "no such file"),
        ("prompts_file: p.md\n", 1, "prompts_file", "unsupported"),
        ("matrix: {style_type: [ANIME, WEIRD]}\nitems: [a]\n", 1, "matrix.style_type[1]", "one of"),
        ("matrix:\n  style_type:\n    - ANIME\n    - ANIME\nitems: [a]\n", 4, "matrix.style_type[1]", "duplicate"),
        ("matrix: {style_type: []}\nitems: [a]\n", 1, "matrix.style_type", "non-empty"),
        ("matrix: {prompt: [a, b]}\nitems: [a]\n", 1, "matrix.prompt", "axis"),
        ("matrix: [a]\nitems: [a]\n", 1, "matrix", "mapping"),
        ("variants: 0\nitems: [a]\n", 1, "variants", "at least 1"),
        ("variants: 2\nitems:\n  - {prompt: a, seed: 500}\n", 3, "items[0].seed", "variants"),
        ("id_template: '{style_type}'\nitems: [a]\n", 1, "id_template", "{id}"),
        ("id_template: '{id}-{bad.attr}'\nitems: [a]\n", 1, "id_template", "placeholder"),
        ("variants: 2\nid_template: '{id}'\nitems: [a]\n", 3, "items[0].id_template", "{variant}"),
        ("items:\n  - {id: x, prompt: a, matrix: {style_type: [ANIME]}}\n  - {id: x-anime, prompt: b}\n", 3, "items[1].id", "also the id"),
        ("items:\n  - id: " + "a" * 95 + "\n    prompt: p\n    variants: 2\n    matrix: {style_type: [ANIME]}\n", 2, "items[0].id", "id_template"),
        ("items:\n  - prompt: a\n    variants: many\n", 3, "items[0].variants", "integer"),
    ],
)
def test_expansion_errors(tmp_path: Path, text: str, line: int, field: str, fragment: str) -> None:
    (tmp_path / "p.md").write_text("x\n")
    p = write_manifest(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(p)
    e = info.value
    assert (e.path, e.line, e.field) == (str(p), line, field), str(e)
    assert fragment in e.message, str(e)


def test_hundred_thousand_expanded_items_load_fast(tmp_path: Path) -> None:
    prompts = "\n".join(f"prompt number {i} about a thing" for i in range(10_000))
    p = write_manifest(
        tmp_path,
        "prompts_file: p.txt\nmatrix: {style_type: [REALISTIC, ANIME, DESIGN, GENERAL, RENDER_3D]}\nvariants: 2\n",
        p_txt=prompts,
    )
    t = time.perf_counter()
    m = load_manifest(p)
    elapsed = time.perf_counter() - t
    assert len(m.items) == 100_000 and len({it.id.casefold() for it in m.items}) == 100_000
    assert elapsed < 10, f"{elapsed:.1f}s"
