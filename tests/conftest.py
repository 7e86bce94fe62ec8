"""Fixtures for every suite come from ``tests/support``; see each module's docstring.

- ``tests.support.sandbox``: ``sandbox``, ``sandbox_factory`` (a started emulator), ``clock``, ``http``
- ``tests.support.service``: ``service`` (a scripted HTTP server on a real socket), ``client``
- ``tests.support.cli``: ``start_cli`` (a ``batchgen`` subprocess, SIGKILLed at the end)
- ``tests.support.objstore``: ``moto_endpoint`` (moto's S3 server, once per session), ``s3`` (a bucket, AWS env set)
"""

import pytest

pytest_plugins = ["tests.support.sandbox", "tests.support.service", "tests.support.cli", "tests.support.objstore"]


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own SEGMIND_API_KEY must never reach a test: with it, a dry run or plan would
    ask the real service for the balance. Tests that need a key set one (on loopback only)."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
