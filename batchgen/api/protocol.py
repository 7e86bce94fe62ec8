"""The service's paths and header names, in one place shared by the client and the emulator.

Route templates use aiohttp's ``{name}`` placeholders; ``path()`` fills them for a request. Keeping
both sides on these constants is what lets the sandbox prove the client speaks the real protocol.
"""

from __future__ import annotations

__all__ = [
    "API_KEY_HEADER",
    "CREDITS",
    "RATE_RESET_HEADER",
    "REQUEST_HISTORY",
    "REQUEST_HISTORY_ITEM",
    "RESULT",
    "RESULT_V1",
    "STATUS",
    "SUBMIT",
    "path",
]

SUBMIT = "/v2/{slug}"
STATUS = "/v2/requests/{request_id}/status"
RESULT = "/v2/requests/{request_id}"
RESULT_V1 = "/v1/requests/{request_id}"  # the v1 ``poll_url`` leftover in submit answers
CREDITS = "/v1/get-user-credits"
# The account's request history, on its own host in production (api.spotprod.segmind.com).
REQUEST_HISTORY = "/inference-request/request-history"
REQUEST_HISTORY_ITEM = "/inference-request/request-history/{request_id}"

API_KEY_HEADER = "x-api-key"
RATE_RESET_HEADER = "x-rate-limit-reset-at-utc"


def path(template: str, **values: str) -> str:
    """A route template with its placeholders filled (values are ids and slugs, never user text)."""
    return template.format(**values)
