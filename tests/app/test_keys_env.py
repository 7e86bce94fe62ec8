"""A pool of keys from the environment: SEGMIND_API_KEYS, SEGMIND_API_KEYS_FILE, besides SEGMIND_API_KEY.

Each key is checked as the single key is; a mistake ends the command (exit 2) naming where the key
was given, never the key itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.api.outcomes import Credits, Retryable, RunFatal, Secret
from batchgen.app.keypool import KeyClients, preflight
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


# ---- the balance check of a pool -----------------------------------------------------------------


class Balance:
    """A client whose balance is fixed (or whose credits call answers ``answer``)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    async def credits(self) -> object:
        return self.answer


def pool_of(*answers: object) -> KeyClients:
    secrets = [Secret(f"SG_key_number_{i}_abcdef") for i in range(len(answers))]
    return KeyClients(secrets, [Balance(a) for a in answers], [None] * len(answers))  # type: ignore[misc]


async def test_the_plan_is_checked_against_the_sum_and_a_short_key_is_named() -> None:
    said: list[str] = []
    keys = pool_of(Credits(1.0, 0.0), Credits(4.0, 1.0))
    await preflight(keys, need_n=4, price=1.0, spend_available=False, say=said.append)
    assert said == [f"warning: key 1 of 2 ({keys.secrets[0].fingerprint}) has $1.00, short of its share $2.00 "
                    "of this run; the other keys take on more"]
    with pytest.raises(UserError) as e:
        await preflight(pool_of(Credits(1.0, 0.0), Credits(2.0, 0.0)), need_n=4, price=1.0, spend_available=False,
                        say=said.append)
    assert e.value.code == ExitCode.ABORTED and "balance $3.00 (over 2 keys) cannot pay for 4 images" in str(e.value)


async def test_a_refused_key_is_retired_at_the_check_and_an_unknown_balance_skips_it() -> None:
    said: list[str] = []
    keys = pool_of(RunFatal("auth", "the API key was refused (HTTP 401)", 401), Retryable("no answer", sent=False),
                   Credits(0.5, 0.0))
    await preflight(keys, need_n=10, price=1.0, spend_available=False, say=said.append)  # the sum is unknown
    assert keys.retired[0] is not None and keys.retired[1:] == [None, None]
    assert [p.refused for p in keys.pool("https://history.example")] == [True, False, False]
    assert said[0].startswith(f"warning: key 1 of 3 ({keys.secrets[0].fingerprint}) retired for this run")
    assert said[1].startswith(f"warning: could not read the balance of key 2 of 3 ({keys.secrets[1].fingerprint})")
    with pytest.raises(UserError) as e:
        await preflight(pool_of(RunFatal("auth", "refused", 401), RunFatal("auth", "refused", 401)), need_n=1,
                        price=1.0, spend_available=False, say=said.append)
    assert e.value.code == ExitCode.ABORTED and str(e.value).startswith("no API key left")
