"""Bad input never costs money and never shows a traceback: exit 2, one line, no connection made.

``tests/test_manifest.py`` proves each rule of the loader with exact messages; here random YAML
structures and random parameter values look for anything the rules missed (an exception other than
``ManifestError`` is a crash), and the named hostile cases go through the command line with a
listening socket standing in for the service, so "no request" means no TCP connection at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchgen.cli import commands as cli
from batchgen.manifest import Manifest, ManifestError, load_manifest
from batchgen.models import get_model

SPEC = get_model("ideogram-txt-2-img")
PARAMS = sorted(SPEC.by_name) if SPEC is not None else ["prompt", "seed", "resolution"]
TOP_KEYS = ["name", "model", "output", "defaults", "items", "limits", "matrix", "variants", "id_template",
            "prompts_file", "price_usd", "bogus"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["RESOLUTION_1024_1024", "AUTO", "GENERAL", "#FF00AA", "../x", "/etc/passwd"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(PARAMS + TOP_KEYS), st.text(max_size=8)),
                                                 inner, max_size=4)), max_leaves=20)
items = st.lists(st.one_of(st.text(max_size=30), st.dictionaries(st.sampled_from(PARAMS + ["id", "variants", "matrix"]),
                                                                  values, max_size=6), values), max_size=5)
documents = st.one_of(values, st.fixed_dictionaries({"items": items}, optional={
    k: values for k in TOP_KEYS if k != "items"}))


def load_text(tmp: Path, data: bytes) -> Manifest | ManifestError:
    path = tmp / "m.yaml"
    path.write_bytes(data)
    try:
        return load_manifest(path)
    except ManifestError as e:
        assert str(e).strip() and "\n" not in str(e).strip(), repr(str(e))
        return e


def check_valid(m: Manifest) -> None:
    """Whatever the loader accepts must be safe to submit and to name files by."""
    for it in m.items:
        assert it.id and "/" not in it.id and "\\" not in it.id and "\0" not in it.id and it.id not in (".", "..")
        params = dict(it.params)
        assert isinstance(params.get("prompt"), str) and params["prompt"].strip()
        if "seed" in params:
            assert isinstance(params["seed"], int) and 100 <= params["seed"] <= 999999


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


def run_refused(tmp: Path, data: bytes, service: tuple[str, socket.socket], capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> str:
    url, srv = service
    monkeypatch.setenv("SEGMIND_API_KEY", "SG_test_key_never_used")
    monkeypatch.chdir(tmp)
    path = tmp / "m.yaml"
    path.write_bytes(data)
    code = cli.main(["run", str(path), "--base-url", url, "--out", str(tmp / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert_no_connection(srv)
    assert not (tmp / "out").exists(), "bad input created the output folder"
    return lines[0]


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
        assert len(captured.err.strip().splitlines()) == 1
