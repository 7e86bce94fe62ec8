"""Bad input never costs money and never shows a traceback: exit 2, one line per mistake, no connection.

``tests/manifest`` proves each rule of the loader with exact messages; here random YAML structures,
random parameter values and random prompts files look for anything the rules missed (an exception
other than ``ManifestError`` is a crash), and the named hostile cases go through the command line
with a listening socket standing in for the service, so "no request" means no TCP connection at all.
A manifest with several mistakes prints each on its own line (at most 20, then "N more").
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchgen.cli import commands as cli
from batchgen.manifest import Manifest, ManifestError, load_manifest
from batchgen.manifest.mistakes import MAX_SHOWN
from batchgen.manifest.validate import MAX_TEXT_CHARS
from batchgen.models import get_model

SPEC = get_model("ideogram-txt-2-img")
PARAMS = sorted(SPEC.by_name) if SPEC is not None else ["prompt", "seed", "resolution"]
TOP_KEYS = ["name", "model", "output", "defaults", "items", "limits", "matrix", "variants", "id_template",
            "prompts_file", "price_usd", "bogus"]

# Strings that once passed: a final newline ("$" matched before it), a form feed or U+0085 (they
# split a .txt prompt), escapes and other controls, a prompt one past the length cap.
HOSTILE = ["foo\n", "#aabbcc\n", "a\x0cb", "a\x85b", "a\u2028b", "\x1b[2J", "a\rb", "x\x00", "p" * (MAX_TEXT_CHARS + 1)]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["RESOLUTION_1024_1024", "AUTO", "GENERAL", "#FF00AA", "../x", "/etc/passwd"]),
                    st.sampled_from(HOSTILE))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(PARAMS + TOP_KEYS), st.text(max_size=8)),
                                                 inner, max_size=4)), max_leaves=20)
items = st.lists(st.one_of(st.text(max_size=30), st.dictionaries(st.sampled_from(PARAMS + ["id", "variants", "matrix"]),
                                                                  values, max_size=6), values), max_size=5)
documents = st.one_of(values, st.fixed_dictionaries({"items": items}, optional={
    k: values for k in TOP_KEYS if k != "items"}))


def check_error(e: ManifestError) -> list[str]:
    """The lines a mistake prints: one per mistake (each ``file[:line]: ...``), then "N more" if any."""
    lines = str(e).split("\n")
    shown = [str(x) for x in e.errors]
    assert 1 <= len(shown) <= MAX_SHOWN and all(x.strip() and "\n" not in x for x in shown), lines
    more = lines[len(shown):]
    assert lines[: len(shown)] == shown and (more == [] or re.fullmatch(r"\d+ more errors? not shown", more[0])), lines
    assert len(more) <= 1 and (not more or len(shown) == MAX_SHOWN), lines
    return lines


def load_text(tmp: Path, data: bytes, name: str = "m.yaml") -> Manifest | ManifestError:
    path = tmp / name
    path.write_bytes(data)
    try:
        return load_manifest(tmp / "m.yaml")
    except ManifestError as e:
        check_error(e)
        return e


SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def check_valid(m: Manifest) -> None:
    """Whatever the loader accepts must be safe to submit and to name files by."""
    for it in m.items:
        assert SAFE_ID.fullmatch(it.id), repr(it.id)
        params = dict(it.params)
        assert isinstance(params.get("prompt"), str) and params["prompt"].strip()
        if "seed" in params:
            assert isinstance(params["seed"], int) and 100 <= params["seed"] <= 999999
        for text in strings(params):
            assert len(text) <= MAX_TEXT_CHARS and not CONTROL.search(text), repr(text[:80])


LONG = os.environ.get("BATCHGEN_CHAOS") == "long"
# Derandomized: the same examples every run (a failure replays as is); the long form tries many more.
FAST = settings(max_examples=2000 if LONG else 50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(doc=documents)
def test_random_yaml_structures_load_or_fail_cleanly(tmp_path: Path, doc: Any) -> None:
    got = load_text(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode())
    if isinstance(got, Manifest):
        check_valid(got)


@FAST
@given(params=st.lists(st.dictionaries(st.sampled_from(PARAMS), values, min_size=1, max_size=len(PARAMS)),
                       min_size=1, max_size=4))
def test_random_parameter_values_load_or_fail_cleanly(tmp_path: Path, params: list[dict[str, Any]]) -> None:
    doc = {"model": "ideogram-txt-2-img", "items": params}
    got = load_text(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode())
    if isinstance(got, Manifest):
        check_valid(got)


@FAST
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_bytes_load_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    got = load_text(tmp_path, data)
    if isinstance(got, Manifest):
        check_valid(got)


row_text = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(list("\n\r\x0c\x85\u2028\t,\"{}:"))),
                   max_size=200)
rows_of = {
    ".txt": row_text,
    ".jsonl": st.lists(st.one_of(row_text, st.dictionaries(st.sampled_from(PARAMS + ["id", "variants"]), values,
                                                           max_size=4).map(json.dumps)), max_size=6).map("\n".join),
    ".csv": st.lists(st.lists(row_text.map(lambda t: t[:20]), min_size=1, max_size=4).map(",".join),
                     max_size=6).map(lambda rows: "\n".join(["prompt,seed,id,style_type", *rows])),
}


@FAST
@given(suffix=st.sampled_from(sorted(rows_of)), data=st.data())
def test_random_prompts_files_load_or_fail_cleanly(tmp_path: Path, suffix: str, data: st.DataObject) -> None:
    content = data.draw(rows_of[suffix])
    (tmp_path / "m.yaml").write_text(f"prompts_file: p{suffix}\n")
    got = load_text(tmp_path, content.encode("utf-8", "surrogatepass"), f"p{suffix}")
    if isinstance(got, Manifest):
        check_valid(got)
        if suffix == ".txt":  # a prompt per line, split only at "\n" and "\r\n"
            assert len(got.items) <= content.count("\n") + 1


@FAST
@given(bad=st.lists(st.sampled_from(['{prompt: a, seed: 5}', '{prompt: "a\\x1bb"}', '{id: "x\\n", prompt: a}',
                                     "{prompt: a, style_type: anime}", "{prompt: a, sede: 500}"]), max_size=45),
       good=st.integers(1, 5))
def test_each_mistake_is_one_line_in_file_order_twenty_at_most(tmp_path: Path, bad: list[str], good: int) -> None:
    text = "items:\n" + "".join(f"  - fine {i}\n" for i in range(good)) + "".join(f"  - {b}\n" for b in bad)
    got = load_text(tmp_path, text.encode())
    if not bad:
        assert isinstance(got, Manifest)
        return
    assert isinstance(got, ManifestError)
    lines = check_error(got)
    assert [x.line for x in got.errors] == sorted(x.line for x in got.errors)
    assert {x.line for x in got.errors} == set(range(good + 2, good + 2 + min(len(bad), MAX_SHOWN)))
    assert len(lines) == min(len(bad), MAX_SHOWN) + (len(bad) > MAX_SHOWN)


# ---- through the command line ----------------------------------------------------------------


@pytest.fixture
def service() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket posing as the service: any connection to it means a request was attempted."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.setblocking(False)
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", srv
    finally:
        srv.close()


def assert_no_connection(srv: socket.socket) -> None:
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError("the worker connected to the service despite bad input")


def run_refused(tmp: Path, data: bytes | None, service: tuple[str, socket.socket], capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> str:
    """``batchgen run`` on ``tmp/m.yaml`` (written from ``data`` unless None): exit 2, nothing sent.

    stderr is exactly the loader's mistakes, one ``batchgen: `` line each; the text is returned.
    """
    url, srv = service
    monkeypatch.setenv("SEGMIND_API_KEY", "SG_test_key_never_used")
    monkeypatch.chdir(tmp)
    path = tmp / "m.yaml"
    if data is not None:
        path.write_bytes(data)
    expected = check_error(unblocked(lambda: catch(path), tmp))
    code = unblocked(lambda: cli.main(["run", str(path), "--base-url", url, "--out", str(tmp / "out"), "--no-progress"]), tmp)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    assert captured.err.splitlines() == [f"batchgen: {line}" for line in expected], captured.err
    assert "Traceback" not in captured.err
    assert_no_connection(srv)
    assert not (tmp / "out").exists(), "bad input created the output folder"
    return "\n".join(expected)


def catch(path: Path) -> ManifestError:
    try:
        load_manifest(path)
    except ManifestError as e:
        return e
    raise AssertionError(f"{path} loaded")


def unblocked(fn: Callable[[], Any], tmp: Path) -> Any:
    """``fn()``, failing (not hanging) if it waits on one of ``tmp``'s FIFOs for a writer."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():
        for f in tmp.iterdir():
            if f.is_fifo():
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
        t.join(60)
        raise AssertionError("reading the manifest blocked on a FIFO")
    if "error" in box:
        raise box["error"]
    return box["result"]


ALIAS_BOMB = b"""a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
items: [{prompt: "x", negative_prompt: *h}]
"""

NAMED: dict[str, tuple[bytes, str]] = {
    "path traversal id": (b"items:\n  - id: ../../etc/cron.d/x\n    prompt: hi\n", "id"),
    "absolute id": (b"items:\n  - id: /etc/passwd\n    prompt: hi\n", "id"),
    "NUL in id": (b'items:\n  - id: "a\\0b"\n    prompt: hi\n', "id"),
    "NUL byte in the file": (b"items:\n  - prompt: a\x00b\n", "m.yaml"),
    "python object tag": (b"items:\n  - prompt: !!python/object/apply:os.system ['touch /tmp/pwned']\n", "m.yaml"),
    "python name tag": (b"items: !!python/name:os.system\n", "m.yaml"),
    "alias bomb": (ALIAS_BOMB, "m.yaml"),
    "not UTF-8": (b"items:\n  - prompt: caf\xe9 \xff\xfe\n", "UTF-8"),
    "empty file": (b"", "m.yaml"),
    "only a comment": (b"# nothing here\n", "m.yaml"),
    "id with a final newline": (b'items:\n  - {id: "foo\\n", prompt: hi}\n', "'foo\\n'"),
    "name with a final newline": (b'name: "run\\n"\nitems: [hi]\n', "name:"),
    "colour with a final newline": (
        b'items:\n  - {prompt: a, color_palette: {members: [{color_hex: "#aabbcc\\n", color_weight: 1}]}}\n',
        "color_hex"),
    "terminal escape in a prompt": (b'items:\n  - "\\e]0;owned\\a\\e[2J"\n', "U+001B"),
    "NUL in the output path": (b'output: "out\\0x"\nitems: [hi]\n', "output: contains the control character U+0000"),
    "prompt over the length cap": (b"items:\n  - " + b"p" * (MAX_TEXT_CHARS + 1) + b"\n", "the limit is 10000"),
    "twenty-five mistakes": (b"items:\n" + b"".join(b"  - {prompt: a, seed: %d}\n" % i for i in range(25)),
                             "5 more errors not shown"),
}

# Files that are not a manifest's text: named by the path, refused before anything is read.
SPECIAL: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest is a FIFO": (lambda d: os.mkfifo(d / "m.yaml"), "m.yaml: not a regular file (a FIFO)"),
    "manifest is a directory": (lambda d: (d / "m.yaml").mkdir(), "m.yaml: is a directory, not a manifest file"),
    "prompts file is a FIFO": (lambda d: (os.mkfifo(d / "p.txt"), (d / "m.yaml").write_text("prompts_file: p.txt\n")),
                               "p.txt: not a regular file (a FIFO)"),
    ".txt row split by a form feed": (
        lambda d: ((d / "p.txt").write_bytes(b"one\x0ctwo\n"), (d / "m.yaml").write_text("prompts_file: p.txt\n")),
        "p.txt:1: prompt: contains the control character U+000C"),
}


@pytest.mark.parametrize("case", list(NAMED))
def test_named_bad_manifests_exit_2_with_one_line_and_no_request(
    tmp_path: Path, case: str, service: tuple[str, socket.socket], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    data, fragment = NAMED[case]
    line = run_refused(tmp_path, data, service, capsys, monkeypatch)
    assert fragment in line, line
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("case", list(SPECIAL))
def test_special_files_exit_2_with_one_line_and_no_request(
    tmp_path: Path, case: str, service: tuple[str, socket.socket], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    make, fragment = SPECIAL[case]
    make(tmp_path)
    text = run_refused(tmp_path, None, service, capsys, monkeypatch)
    assert "\n" not in text and fragment in text, text


@settings(max_examples=300 if LONG else 15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_random_bad_manifests_through_the_cli(
    tmp_path_factory: pytest.TempPathFactory, doc: Any, service: tuple[str, socket.socket],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_dump(doc, allow_unicode=True).encode()
    tmp = tmp_path_factory.mktemp("cli")
    assume(isinstance(load_text(tmp, data), ManifestError))
    run_refused(tmp, data, service, capsys, monkeypatch)


@pytest.mark.slow
def test_fifty_megabyte_manifest_is_planned_or_refused_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("model: ideogram-txt-2-img\nitems:\n")
        i = 0
        while f.tell() < 50_000_000:
            f.write(f'  - "Prompt number {i}, a watercolor fox in the snow, with a few more words"\n')
            i += 1
    code = cli.main(["plan", str(path), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    assert "Traceback" not in captured.err
    if code == 2:
        assert all(line.startswith("batchgen: ") for line in captured.err.splitlines()), captured.err
