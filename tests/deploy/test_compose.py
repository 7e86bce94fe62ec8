"""docker-compose.yml cannot run here (no Docker engine), so its promises are checked by reading it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from batchgen.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _args(service: dict):
    cmd = service["command"]
    assert isinstance(cmd, list), "commands are exec-form lists so no shell mangles them"
    return build_parser().parse_args(cmd)


def test_services_are_sandbox_and_worker(compose: dict) -> None:
    assert {"sandbox", "worker"} <= set(compose["services"])


def test_sandbox_command_is_a_valid_sandbox_invocation_listening_on_all_interfaces(compose: dict) -> None:
    sb = compose["services"]["sandbox"]
    args = _args(sb)
    assert args.command == "sandbox"
    assert args.host == "0.0.0.0"
    published = {str(p).split(":")[-1] for p in sb.get("ports", [])}
    assert str(args.port) in published
    assert f":{args.port}/" in " ".join(sb["healthcheck"]["test"])


def test_worker_runs_a_shipped_manifest_against_the_sandbox_service(compose: dict) -> None:
    services = compose["services"]
    worker = services["worker"]
    args = _args(worker)
    assert args.command == "run"
    target = urlparse(args.base_url)
    assert target.hostname == "sandbox"
    assert target.port == _args(services["sandbox"]).port
    assert "sandbox" in worker["depends_on"]

    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    # The manifest path is relative to the image's working directory /app.
    assert str(Path("/app") / args.manifest.parent) in mounts
    host_jobs = ROOT / mounts[str(Path("/app") / args.manifest.parent)]
    assert (host_jobs / args.manifest.name).is_file()
    assert str(Path("/app") / args.out).startswith(next(m for m in mounts if m.endswith("/out")))
    assert worker["environment"]["SEGMIND_API_KEY"], "the worker needs a key variable (any key for the sandbox)"


def test_image_entrypoint_is_the_cli(compose: dict) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["batchgen"]' in dockerfile
    assert "WORKDIR /app" in dockerfile
    for name in ("sandbox", "worker"):
        assert compose["services"][name]["build"] == "."
