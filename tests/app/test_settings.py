"""Flags and environment checked before anything is sent: the service address and the key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.app.settings import check_base_url, read_api_key
from batchgen.core.errors import ExitCode, UserError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.segmind.com", "https://api.segmind.com"),
        ("https://api.segmind.com/", "https://api.segmind.com"),
        ("HTTP://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
        ("  http://localhost:9  ", "http://localhost:9"),
    ],
)
def test_an_origin_is_accepted_and_normalised(given: str, expected: str) -> None:
    assert check_base_url(given) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("127.0.0.1:8765", "needs http:// or https://"),
        ("htp://127.0.0.1:8765", "needs http:// or https://"),
        ("ftp://example.com", "needs http:// or https://"),
        ("http://", "needs http:// or https://"),
        ("http://:8765", "no host"),
        ("http://host:99999", "port"),
        ("http://host:port", "port"),
        ("https://api.segmind.com/v1", "without a path"),
        ("https://api.segmind.com?x=1", "without a path"),
        ("https://api.segmind.com/#frag", "without a path"),
        ("https://user:pw@api.segmind.com", "no user or password"),
        ("A://[", "not a URL"),
        ("http://[::1", "not a URL"),
    ],
)
def test_anything_but_an_origin_is_a_user_error(given: str, says: str) -> None:
    with pytest.raises(UserError) as e:
        check_base_url(given)
    assert e.value.code == ExitCode.BAD_INPUT
    assert says in str(e.value)
    assert "\n" not in str(e.value)


def test_credentials_in_the_address_are_never_echoed() -> None:
    with pytest.raises(UserError) as e:
        check_base_url("https://me:SG_secret@api.segmind.com")
    assert "SG_secret" not in str(e.value)


def test_key_is_read_stripped_and_unset_is_none() -> None:
    assert read_api_key({"SEGMIND_API_KEY": "  SG_abc123\n"}) == "SG_abc123"
    assert read_api_key({"SEGMIND_API_KEY": "   "}) is None
    assert read_api_key({}) is None


@pytest.mark.parametrize(
    "value",
    ["SG_abc\n# prod key", "SG_a\tbc", "SG_a bc", "SG_abc\x00", "SG_abc\x1b[0m", "SG_ab\u00e9c", "SG_abc\r\nX"],
)
def test_a_key_that_cannot_be_a_key_is_refused_without_showing_it(value: str) -> None:
    with pytest.raises(UserError) as e:
        read_api_key({"SEGMIND_API_KEY": value})
    assert e.value.code == ExitCode.BAD_INPUT
    assert "SG_a" not in str(e.value)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.one_of(
    st.text(),
    st.builds(lambda scheme, rest: f"{scheme}{rest}", st.sampled_from(["http://", "https://", "htp://", "", "HTTPS://"]),
              st.text(alphabet="abc.:/?#@[]%0123456789-_ \n\t\x00", max_size=40)),
))
def test_any_address_is_accepted_as_an_origin_or_refused_as_a_user_error(text: str) -> None:
    try:
        got = check_base_url(text)
    except UserError as e:
        assert e.code == ExitCode.BAD_INPUT and "\n" not in str(e)
        return
    assert got.startswith(("http://", "https://"))
    rest = got.split("://", 1)[1]
    assert rest and "/" not in rest and "?" not in rest and "#" not in rest and "@" not in rest


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text())
def test_any_key_value_is_a_key_none_or_a_user_error_that_never_shows_it(value: str) -> None:
    try:
        got = read_api_key({"SEGMIND_API_KEY": value})
    except UserError as e:
        assert e.code == ExitCode.BAD_INPUT
        assert value.strip() not in str(e) or len(value.strip()) < 3
        return
    assert got is None or (got == value.strip() and got.isascii() and got.isprintable() and " " not in got)
