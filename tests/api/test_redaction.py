"""Every echo of the API key is masked before an answer's text becomes a message, a log line or a ledger field."""

from __future__ import annotations

import json

import pytest

from batchgen.api.client import Client, Secret
from batchgen.api.mock_transport import MockTransport
from batchgen.api.outcomes import ItemFatal, RunFatal
from batchgen.api.redact import min_echo
from batchgen.api.transport import Request, Response

KEY = "SG_secret_1234567890abcdef"


def _json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


@pytest.mark.parametrize(
    "echo",
    [
        KEY,
        _json_escaped(KEY),
        _json_escaped(KEY).upper().replace("\\U", "\\u"),
        "".join(f"%{ord(c):02X}" for c in KEY),
        KEY[:5] + _json_escaped(KEY[5:12]) + KEY[12:],  # mixed
        KEY[:12] + "...",  # cut short
        "..." + KEY[-10:],
    ],
)
def test_every_form_of_an_echo_is_masked(echo: str) -> None:
    masked = Secret(KEY).redact(f"Unauthorized. API key {echo} is invalid")
    assert masked.startswith("Unauthorized. API key ") and masked.endswith(" is invalid") and "***" in masked
    for i in range(len(KEY) - min_echo(KEY) + 1):
        assert KEY[i : i + min_echo(KEY)] not in masked


def test_text_without_the_key_is_left_alone() -> None:
    for text in ('{"status":"PROCESSING","metrics":{}}', "SG_ is a prefix", "50% off \\u0041", ""):
        assert Secret(KEY).redact(text) == text


async def test_a_json_escaped_echo_never_reaches_an_outcome_message() -> None:
    body = json.dumps({"error": f"key {KEY} rejected", "echo": KEY}, ensure_ascii=True)
    body = body.replace(KEY, _json_escaped(KEY))  # as a gateway that escapes everything sends it

    def answer(request: Request) -> Response:
        return Response(401, {"Content-Type": "application/json"}, body.encode())

    async with Client("http://svc.test", Secret(KEY), transport=MockTransport(answer)) as c:
        got = await c.submit("ideogram-txt-2-img", {"prompt": "x"})
    assert isinstance(got, RunFatal | ItemFatal)
    assert "\\u0053\\u0047" not in got.message and KEY[:8] not in got.message
    assert "***" in got.message
