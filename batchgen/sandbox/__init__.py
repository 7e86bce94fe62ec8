"""Offline emulator of Segmind's asynchronous v2 API for tests, demos and ``batchgen run --sandbox``.

Routes (all URLs in answers are absolute, built from the request's Host):

- ``POST /v2/{slug}`` submit; ``GET /v2/requests/{id}/status``; ``GET /v2/requests/{id}`` result
  (``GET /v1/requests/{id}``, the ``poll_url`` leftover, answers the same); ``GET /v1/get-user-credits``.
  These need ``x-api-key`` and are subject to the rate limit and injected faults.
- ``GET /inference-request/request-history`` (``page``, ``per_page`` 1-100, ``from_date``/``to_date``
  YYYY-MM-DD at most 31 days apart, default the last 7 days, ``model_name`` substring, ``status``,
  ``sort_by``, ``sort_order``; answers ``{"data": [...], "page", "per_page", "total"}``, 400 for a bad
  query) and ``GET /inference-request/request-history/{id}`` (any age, only the caller's own, else
  404): every accepted submit of each key, lost answers included, with ``request_body`` as received,
  cost, output URL and error. Keyed and faulted like the v2 calls; rate-limited like status polls
  (only under ``rpm_scope="all"``). The
  history trails the service by ``history_lag`` (scaled): before a record lands the list omits it
  and the single lookup answers with every field but ``request_id`` null; a row stays PENDING
  until the lag has passed after its request finished. ``history_outputs=N`` lists a COMPLETED
  request N times, each with the full cost; ``history_body="string"`` and ``history_dates="http"``
  vary the row's forms; ``history=False`` (``--history off``) makes both endpoints plain 404s.
- ``GET /files/{id}.png`` the output image, no key, kept for ``file_retention``; only ``truncate`` hits it.
- ``GET /_sandbox/stats`` counters, ``POST /_sandbox/credits {"credits": USD}`` sets the balance;
  no key, never faulted.

Typical use::

    async with Sandbox(latency=0.05, faults="429=0.1", fault_seed=1) as sb:
        ...  # point a client at sb.url, then inspect sb.stats()
"""

from batchgen.sandbox.faults import FAULT_KINDS, FaultSpecError, parse_faults
from batchgen.sandbox.server import Sandbox, build_app
from batchgen.sandbox.state import FAIL_MARKER, SandboxConfig, SandboxState

__all__ = [
    "FAIL_MARKER",
    "FAULT_KINDS",
    "FaultSpecError",
    "Sandbox",
    "SandboxConfig",
    "SandboxState",
    "build_app",
    "parse_faults",
]
