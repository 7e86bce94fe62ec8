"""Offline emulator of Segmind's asynchronous v2 API for tests, demos and ``batchgen run --sandbox``.

Routes (all URLs in answers are absolute, built from the request's Host):

- ``POST /v2/{slug}`` submit; ``GET /v2/requests/{id}/status``; ``GET /v2/requests/{id}`` result
  (``GET /v1/requests/{id}``, the ``poll_url`` leftover, answers the same); ``GET /v1/get-user-credits``.
  These need ``x-api-key`` and are subject to the rate limit and injected faults.
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
