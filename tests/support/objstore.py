"""A real S3 API on loopback: moto's server, started once per session, and a bucket per test.

No storage is mocked: every object-store test talks HTTP to this server through s3fs, as a run
would talk to S3. ``s3`` sets the standard AWS variables (endpoint, dummy credentials, region) for
the test and its subprocesses (``start_cli`` / ``run_cli`` inherit them) and removes them after.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server for the whole session (a free port)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log in test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class S3:
    endpoint: str
    bucket: str
    fs: Any

    def url(self, prefix: str = "out") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def keys(self, prefix: str = "out") -> list[str]:
        """Every key under ``prefix``, relative to it."""
        root = f"{self.bucket}/{prefix}/"
        try:
            return sorted(k[len(root):] for k in self.fs.find(root))
        except FileNotFoundError:
            return []


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value-123",
           "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the session's moto server, with the AWS environment set for this test."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ROLE_ARN",
              "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    bucket = f"batchgen-test-{next(_buckets)}"
    fs.mkdir(bucket)
    return S3(moto_endpoint, bucket, fs)
