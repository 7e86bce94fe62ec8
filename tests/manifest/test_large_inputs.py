"""Large manifests are read in pieces and checked as plain values: the result is the one a whole
reading gives, whatever the piece size, and a file-level mistake is still reported alone."""

from __future__ import annotations

import re
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.manifest import ManifestError, fast, load_manifest, loads_manifest, promptfiles, readfile
from batchgen.manifest.expand import describe_expansion, parameter_counts


def _load(tmp_path: Path, name: str, content: bytes, top: str = "") -> Any:
    (tmp_path / name).write_bytes(content)
    m = tmp_path / "m.yaml"
    m.write_text(f"model: some-other-model\nprompts_file: {name}\n{top}")
    try:
        got = load_manifest(m)
    except ManifestError as e:
        return ("error", str(e))
    return [(it.id, dict(it.params), it.line) for it in got.items]


FILES = {
    "p.jsonl": b'\xef\xbb\xbf{"prompt": "bom first"}\r\n\n{"prompt": "b", "seed": 5}\n  \n{"prompt": "c\\u2028d"}\n'
    b'{"prompt": "no final newline", "n": 12345678901234567890123}',
    "p.txt": b"\xef\xbb\xbffirst\r\n# comment\n\n  spaced  \nlast without newline",
    "p.csv": b'prompt,seed,note\r\n"multi\nline",5,x\r\nplain,,\r\n"quoted, comma",7,"a ""q"""\r\n',
    "bad.jsonl": b'{"prompt": "a"}\nnot json\n[1]\n{"prompt": "b", "x": NaN}\n{"prompt": "c"}\n',
}


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_a_prompts_file_reads_the_same_in_any_piece_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, chunk: int
) -> None:
    whole = _load(tmp_path, name, FILES[name])
    monkeypatch.setattr(readfile, "CHUNK", chunk)
    assert _load(tmp_path, name, FILES[name]) == whole
    if name != "bad.jsonl":
        assert whole[0] != "error" and len(whole) >= 3


def test_jsonl_rows_keep_what_the_standard_library_reads(tmp_path: Path) -> None:
    # orjson reads an integer past 64 bits as a float: such rows are read by the standard library
    got = _load(tmp_path, "p.jsonl", b'{"prompt": "a", "n": 123456789012345678901, "m": -9223372036854775809}\n')
    assert got[0][1] == {"prompt": "a", "n": 123456789012345678901, "m": -9223372036854775809}
    assert type(got[0][1]["n"]) is int and type(got[0][1]["m"]) is int


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        # a bad row first, then something that fails the whole file: only the latter is reported
        ("p.jsonl", b'not json\n{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n', "p.jsonl:3: not valid UTF-8 (byte 0xe9)"),
        ("p.csv", b"prompt,seed\na,12x\n" + b"b" * 131_073 + b",1\n", "p.csv:3: CSV error: field larger"),
        # the byte named is the bad one, after a BOM too
        ("p.txt", b"\xef\xbb\xbfok\nok\n\xff here\n", "p.txt:3: not valid UTF-8 (byte 0xff)"),
    ],
)
def test_a_mistake_of_the_whole_file_is_reported_alone(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    got = _load(tmp_path, name, content)
    assert got[0] == "error"
    assert len(got[1].splitlines()) == 1, got[1]
    assert got[1].startswith(str(tmp_path / expected.split(":")[0]) + expected[len(expected.split(":")[0]):]), got[1]


def test_the_file_is_read_whole_before_its_first_row_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readfile, "CHUNK", 4)  # many pieces; the mistake is in the last one
    rows = b"".join(b'{"prompt": "p%d", "seed": -1}\n' % i for i in range(30)) + b"\xff\n"
    got = _load(tmp_path, "p.jsonl", rows, "defaults: {style_type: x}\n")
    assert got == ("error", f"{tmp_path / 'p.jsonl'}:31: not valid UTF-8 (byte 0xff)")


# ----------------------------------------------------------------------------- yaml-rs items


def test_an_item_whose_first_key_is_not_a_string_is_a_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ManifestError) as info:
        loads_manifest("model: some-other-model\nitems:\n  - 1: x\n", "m.yaml")
    assert str(info.value) == "m.yaml:3: items[0]: keys must be strings, got 1 (quote it)"


def test_plain_items_are_handed_over_as_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast.available():
        pytest.skip("yaml-rs (the fast extra) is not installed")
    composed = []
    monkeypatch.setattr("batchgen.manifest.loader.compose", lambda *a: composed.append(a))
    m = loads_manifest("items:\n  - {id: a, prompt: x, seed: 500}\n  - y\n", "m.yaml")
    assert not composed  # no PyYAML node was made
    assert [(it.id, dict(it.params), it.line) for it in m.items][0] == ("a", {"prompt": "x", "seed": 500}, 2)
    with pytest.raises(TypeError):
        m.items[0].params["seed"] = 1  # type: ignore[index]


# The text checks that decide whether yaml-rs may read a file, written as they were before they were
# folded into one search each: the new ones must decide alike on any text.
_NUMBERISH = re.compile(
    r"(?:^|[:,\[{?]|(?<!\S)-(?=[ \t]))[ \t]*([-+]?\.?[0-9][^\s,\[\]{}#]*)[ \t]*(?=$|[,\]}]|[ \t]#)", re.M
)
_PLAIN = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?")
_SPECIAL = re.compile(r"(?:^|[\s\[{,])[!&*@`]|^%", re.M)
_ODD_BREAKS = re.compile("[\r\x85\u2028\u2029]")


def _reference_is_plain(text: str) -> bool:
    if _ODD_BREAKS.search(text) or fast._NON_PRINTABLE.search(text) or "\t" in text:
        return False
    if _SPECIAL.search(text) or fast._SURROGATE_ESCAPE.search(text):
        return False
    return all(_PLAIN.fullmatch(m.group(1)) for m in _NUMBERISH.finditer(text))


_PIECES = list("0123456789-+.:,[]{}#? \nabeEx_!&*@`%'\"\r\t\x85\u2028") + [
    "\n  - ", ": ", "1e3", "017", "0x1F", "- ", "1.5", "-0", "+.5", "1_000", "\u00a0", "\u0663", "\\u00d8",
]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=24).map("".join))
def test_the_text_checks_decide_as_one_match_per_token_did(text: str) -> None:
    assert fast._text_is_plain(text) == _reference_is_plain(text)


# ----------------------------------------------------------------------------- the plan's counts


def _reference_describe(items: list[Any], done: set[str], max_values: int) -> list[str]:
    sources = Counter(getattr(it, "source", None) or "manifest" for it in items)
    lines = ["  items by source: " + ", ".join(f"{src} {n}" for src, n in sources.items())]
    for name, values in parameter_counts(((it.id, it.params) for it in items), done).items():
        if len(values) > max_values:
            lines.append(f"  {name}: {len(values)} distinct values")
            continue
        lines.append(f"  {name}: " + ", ".join(f"{v} {d}/{n}" for v, (n, d) in values.items()))
    return lines


_VALUES = st.one_of(
    st.sampled_from([1, 2, -1, 0, "1", "-1", "05", "a", "True", True, False, None, 1.0, "1.0", [1], {"name": "x"}]),
    st.integers(-50, 50),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["seed", "style", "prompt", "x"]), _VALUES, max_size=4), max_size=40),
    st.sampled_from([0, 1, 3, 12]),
    st.integers(0, 2**40),
)
def test_the_plan_counts_each_value_as_the_full_tables_did(rows: list[dict[str, Any]], max_values: int, pick: int) -> None:
    items = [types.SimpleNamespace(id=f"i{n}", params=p, source=None if n % 3 else "p.txt") for n, p in enumerate(rows)]
    done = {it.id for n, it in enumerate(items) if pick >> (n % 40) & 1}
    assert describe_expansion(items, done, max_values) == _reference_describe(items, done, max_values)


# ----------------------------------------------------------------------------- streamed rows, whole-file rows


def _whole_file_rows(data: bytes, suffix: str) -> tuple[list[Any], list[str]]:
    """How .txt and .jsonl files were read before they were streamed: decoded whole, split at
    ``\\n`` only, each JSONL line read by the standard library (rows, and the bad rows' messages)."""
    import json

    text = data.decode("utf-8-sig")
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    if "\r" in text:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    rows: list[Any] = []
    bad: list[str] = []
    for n, line in enumerate(lines, start=1):
        if suffix == ".txt":
            s = line.strip()
            if s and not s.startswith("#"):
                rows.append((n, {"prompt": s}))
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_refuse)
        except ValueError as e:
            bad.append(f"{n}: not valid JSON: {e}")
            continue
        except RecursionError:
            bad.append(f"{n}: not valid JSON: nested too deeply")
            continue
        if not isinstance(obj, dict):
            bad.append(f"{n}: each line must be a JSON object with a prompt")
            continue
        rows.append((n, obj))
    return rows, bad


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _typed(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_typed(x) for x in v]
    return (type(v).__name__, repr(v))


_ROW_LINES = [
    '{"prompt": "a", "seed": 5}', '{"prompt": "b", "n": 12345678901234567890123}', "[1]", "not json", "",
    "   ", '{"prompt": "c", "x": NaN}', '{"prompt": "d", "x": Infinity}', '{"prompt": "\\ud800"}',
    '{"prompt": "e", "x": 1e400}', '{"prompt": "k", "prompt": "k2"}', '"a string"', '{"prompt": "f\u2028g"}',
    '{"prompt": "h", "deep": [[[[{"a": null}]]]]}', '{"prompt": "i", "f": 1.5e-7, "g": -0, "h": -0.0}',
    '\t{"prompt": "tab-led"}\t', '{"prompt": "é😀\\u00e9"}', '{"n": 18446744073709551615, "prompt": "j"}',
    '{"n": -9223372036854775808, "m": 9223372036854775807, "prompt": "l"}', "# a comment", "  spaced prompt  ",
    '{"prompt": "m"} trailing', '{"prompt": "cr\rinside"}', "{", '{"prompt": 1.0, "t": true, "u": false}',
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(_ROW_LINES),
                       st.dictionaries(st.text(max_size=3), _VALUES, max_size=3).map(__import__("json").dumps)),
             max_size=12),
    st.lists(st.sampled_from(["\n", "\r\n"]), min_size=12, max_size=12),
    st.booleans(), st.booleans(), st.sampled_from([".txt", ".jsonl"]), st.sampled_from([1, 3, 8, 1 << 20]),
)
def test_streamed_rows_are_the_rows_a_whole_reading_gave(
    lines: list[str], ends: list[str], bom: bool, final: bool, suffix: str, chunk: int
) -> None:
    import tempfile

    body = "".join(line + end for line, end in zip(lines, ends, strict=False))
    if lines and not final:
        body = body[: -len(ends[len(lines) - 1])]
    data = (b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8", errors="surrogatepass")
    expected_rows, expected_bad = _whole_file_rows(data, suffix)
    bad: list[str] = []

    def fail(line: int | None, field: str | None, message: str) -> Exception:
        return ValueError(f"{line}: {message}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"p{suffix}"
        path.write_bytes(data)
        saved, readfile.CHUNK = readfile.CHUNK, chunk
        try:
            got = list(promptfiles.read_rows(path, None, fail, lambda e: bad.append(str(e))))
            error = None
        except ValueError as e:
            got, error = [], str(e)
        finally:
            readfile.CHUNK = saved
    if not expected_rows and not expected_bad:
        assert error == "None: has no prompts"
        return
    assert error is None
    assert [(n, _typed(row)) for n, row in got] == [(n, _typed(row)) for n, row in expected_rows]
    assert bad == expected_bad
