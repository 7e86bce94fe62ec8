"""A pool of keys from the environment: SEGMIND_API_KEYS, SEGMIND_API_KEYS_FILE, besides SEGMIND_API_KEY.

Each key is checked as the single key is; a mistake ends the command (exit 2) naming where the key
was given, never the key itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.api.outcomes import Secret
from batchgen.app.settings import read_api_keys
from batchgen.core.errors import ExitCode, UserError

K1, K2, K3 = "SG_first_0123456789", "SG_second_abcdefghij", "SG_third_ABCDEFGHIJ"


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(UserError) as e:
        read_api_keys(environ)
    assert e.value.code == ExitCode.BAD_INPUT
    message = str(e.value)
    assert "\n" not in message
    return message


def test_every_source_in_order(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# team keys\n\n  {K3}  \n# {K1} (an old one, commented out)\n")
    env = {"SEGMIND_API_KEY": K1, "SEGMIND_API_KEYS": f" {K2} ,", "SEGMIND_API_KEYS_FILE": str(keys_file)}
    assert read_api_keys(env) == [K1, K2, K3]
    assert read_api_keys({"SEGMIND_API_KEYS": f"{K1},{K2}"}) == [K1, K2]
    assert read_api_keys({"SEGMIND_API_KEY": K1}) == [K1]
    assert read_api_keys({"SEGMIND_API_KEYS": " , "}) == [] and read_api_keys({}) == []


@pytest.mark.parametrize("bad", ["SG_has space", "SG_tab\there", "SG_ctrl\x07", "SG_ünicode"])
def test_a_bad_key_is_named_by_its_place_never_its_value(bad: str) -> None:
    message = refused({"SEGMIND_API_KEYS": f"{K1},{bad},{K2}"})
    assert message.startswith("SEGMIND_API_KEYS key 2 holds")
    for shown in (bad, K1, K2, bad[3:]):
        assert shown not in message


def test_a_bad_line_of_the_keys_file_is_named_by_its_line(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{K1}\n\n{K2} # production\n")
    message = refused({"SEGMIND_API_KEYS_FILE": str(keys_file)})
    assert f"({keys_file}) line 3 holds" in message and K2 not in message and K1 not in message


def test_a_repeated_key_is_refused(tmp_path: Path) -> None:
    message = refused({"SEGMIND_API_KEY": K1, "SEGMIND_API_KEYS": f"{K2},{K1}"})
    assert message == "SEGMIND_API_KEYS key 2 repeats SEGMIND_API_KEY: give each key once"
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{K2}\n")
    message = refused({"SEGMIND_API_KEYS": K2, "SEGMIND_API_KEYS_FILE": str(keys_file)})
    assert "line 1 repeats SEGMIND_API_KEYS key 1" in message and K2 not in message


def test_a_missing_or_empty_keys_file_is_refused(tmp_path: Path) -> None:
    assert "cannot read" in refused({"SEGMIND_API_KEYS_FILE": str(tmp_path / "nowhere")})
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    assert "holds no key" in refused({"SEGMIND_API_KEYS_FILE": str(empty)})


def test_a_fingerprint_is_short_stable_and_not_the_key() -> None:
    fp = Secret(K1).fingerprint
    assert fp == Secret(K1).fingerprint and fp != Secret(K2).fingerprint
    assert len(fp) == 12 and all(c in "0123456789abcdef" for c in fp)
    assert fp not in K1 and K1[:6] not in fp
