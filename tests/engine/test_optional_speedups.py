"""orjson and uvloop are optional: the worker must behave the same without them."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.cli import run as pipeline
from batchgen.core import fastjson

SAMPLE = {"ts": "2026-01-01T00:00:00.000Z", "item": "fox-é", "event": "completed", "cost_usd": 0.1,
          "params": {"prompt": "a \"quoted\" fox\n", "seed": 56698}, "big": 2**70}


@pytest.fixture
def without(monkeypatch):
    def hide(*names: str) -> None:
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError

    yield hide
    importlib.reload(fastjson)


def test_fastjson_without_orjson_writes_the_same_lines(without):
    fast = fastjson.dumps(SAMPLE)
    without("orjson")
    importlib.reload(fastjson)
    assert fastjson.orjson is None
    plain = fastjson.dumps(SAMPLE)
    assert json.loads(fast) == json.loads(plain) == SAMPLE
    assert fastjson.loads(plain) == SAMPLE


def test_fastjson_stays_liberal_in_what_it_reads():
    assert math.isnan(fastjson.loads('{"v": NaN}')["v"])
    with pytest.raises(ValueError):
        fastjson.loads("{not json")


def test_loop_options_fall_back_to_plain_asyncio(without):
    without("uvloop")
    assert pipeline.loop_options() == {"backend": "asyncio"}


def test_a_run_completes_without_orjson_and_uvloop(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: m\nmodel: ideogram-txt-2-img\nitems:\n  - a fox\n  - a hare\n")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["orjson"] = None
        sys.modules["uvloop"] = None
        from batchgen.cli.commands import main
        code = main(["run", {str(manifest)!r}, "--out", {str(tmp_path / "out")!r}, "--sandbox", "--no-progress"])
        assert "orjson" not in sys.modules or sys.modules["orjson"] is None
        sys.exit(code)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out" / "ledger.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["event"] == "downloaded" for line in lines) == 2


_JSON_LEAVES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.text(alphabet="\x00\x1f\x7f\"\\\u2028é😀", max_size=4),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _JSON, max_size=5))
def test_canonical_json_is_the_standard_librarys_text_whoever_writes_it(params):
    # ids and the params hash of every ledger compare this text: it may never change
    expected = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fastjson.canonical_json(params) == expected
    assert fastjson.canonical_bytes(params) == expected.encode()
