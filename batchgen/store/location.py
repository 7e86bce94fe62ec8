"""Where an output is: a local folder (a plain path or ``file://``) or an object-store URL.

``s3://bucket/prefix`` needs s3fs; ``gs://`` gcsfs and ``az://`` adlfs (each through fsspec), all
optional: without one, the command ends with one line naming the package to install. Credentials
and the endpoint come only from each library's standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for S3), never from flags,
and no message ever repeats a secret.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.core.errors import BatchgenError, ExitCode, UserError

__all__ = ["RemoteOutput", "StorageFailure", "cache_root", "describe_failure", "open_filesystem", "parse_output"]

# scheme -> (fsspec protocol, the package that implements it)
SCHEMES = {"s3": ("s3", "s3fs"), "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"), "az": ("az", "adlfs"),
           "abfs": ("az", "adlfs")}
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
                     "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_CLIENT_SECRET",
                     "AZURE_CLIENT_SECRET")


@dataclass(frozen=True)
class RemoteOutput:
    """An object-store output: ``url`` as the user wrote it (normalised), ``root`` the fsspec path
    (``bucket/prefix``) every key of the output starts with."""

    url: str
    scheme: str
    root: str

    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    def __str__(self) -> str:
        return self.url


def parse_output(text: str | os.PathLike[str]) -> Path | RemoteOutput:
    """A plain path or ``file://`` URL is a folder; ``s3://`` (``gs://``, ``az://``) an object store.
    Anything else with a scheme is refused (exit 2) rather than taken for a folder named ``x:``."""
    if isinstance(text, Path):
        return text
    raw = os.fspath(text)
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)\Z", raw, re.DOTALL)
    if m is None:
        return Path(raw)
    scheme, rest = m[1].lower(), m[2]
    if scheme == "file":
        if rest.startswith("/"):
            return Path(rest)
        if rest.startswith("localhost/"):
            return Path(rest.removeprefix("localhost"))
        raise UserError(f"{raw}: a file:// URL names an absolute path (file:///srv/out)")
    if scheme not in SCHEMES:
        raise UserError(f"{raw}: unsupported output URL (use a folder, file://, s3://, gs:// or az://)")
    root = rest.strip("/")
    parts = root.split("/")
    if not root or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 for c in root):
        raise UserError(f"{raw}: an object-store output is {scheme}://BUCKET[/PREFIX] (no empty, '.' or '..' parts)")
    return RemoteOutput(f"{scheme}://{root}", scheme, root)


def cache_root(out: RemoteOutput, cache_dir: Path | None, environ: Any = os.environ) -> Path:
    """The local working folder of an object-store output: ``--cache-dir`` when given, else
    ``$XDG_CACHE_HOME/batchgen/<hash of the URL>`` (``~/.cache/...``). It holds the ledger's
    write-ahead files, images while they are verified, and read copies of the ledgers."""
    digest = hashlib.sha256(out.url.encode("utf-8")).hexdigest()[:16]
    if cache_dir is not None:
        return cache_dir / digest
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "batchgen" / digest


def open_filesystem(out: RemoteOutput) -> Any:
    """The fsspec filesystem of ``out``, from the library's standard environment; one line naming
    the package when it is missing."""
    protocol, package = SCHEMES[out.scheme]
    try:
        import fsspec
    except ImportError:
        raise UserError(f"{out.url}: object storage needs fsspec and {package} "
                        f"(pip install 'batchgen[s3]' for S3, or pip install {package})") from None
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if protocol == "s3":
        # Fail fast on an endpoint that does not answer; retries stay bounded.
        options["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 60,
                                    "retries": {"max_attempts": 2, "mode": "standard"}}
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError:
        raise UserError(f"{out.url}: needs the {package} package (pip install {package})") from None
    except ValueError as e:  # fsspec names an unknown protocol this way
        raise UserError(f"{out.url}: needs the {package} package (pip install {package}): {_clean(str(e))}") from None


class StorageFailure(OSError, BatchgenError):
    """An object-store call that failed; its message is one line, secrets removed. An OSError to
    the code that stores (it fails like a disk would), and a ``BatchgenError`` to the command line:
    one line and exit 3 (the state is saved: the next run resumes) wherever it ends a command."""

    code = ExitCode.ABORTED


def describe_failure(out: RemoteOutput, e: BaseException) -> str:
    """One line saying what went wrong with the store, without a traceback or a secret."""
    name = type(e).__name__
    text = _clean(str(e)).splitlines()[0] if str(e) else name
    if name in ("NoCredentialsError", "PartialCredentialsError") or "credential" in text.lower():
        return (f"{out.url}: no credentials for the object store (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or another standard credential source)")
    if "bucket does not exist" in text.lower() or name == "NoSuchBucket":
        return f"{out.url}: bucket {out.bucket!r} does not exist"
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"{out.url}: access denied by the object store ({text})"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError") \
            or "Could not connect" in text or "Connect timeout" in text:
        where = os.environ.get("AWS_ENDPOINT_URL") if out.scheme == "s3" else None
        return f"{out.url}: cannot reach the object store{f' at {where}' if where else ''} ({text})"
    return f"{out.url}: object store error: {text}"


def failure(out: RemoteOutput, e: BaseException, code: int = ExitCode.BAD_INPUT) -> UserError:
    return UserError(describe_failure(out, e), code)


def _clean(text: str) -> str:
    for var in _SECRET_VARIABLES:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text
