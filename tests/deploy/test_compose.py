"""docker-compose.yml cannot run here (no Docker engine), so its promises are checked by reading it."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from batchgen.manifest import load_manifest
from tests.deploy.cli_args import parse_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _args(service: dict, name: str = "service"):
    cmd = service["command"]
    assert isinstance(cmd, list), "commands are exec-form lists so no shell mangles them"
    return parse_cli(cmd, f"docker-compose.yml: {name}")


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> host path of the service's bind mounts."""
    return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}


def _shards(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if "--shard-count" in svc.get("command", [])}


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
    for name, service in compose["services"].items():
        if name == "s3":  # the S3-compatible server is not batchgen: a pinned image of its own
            assert re.fullmatch(r"motoserver/moto:\d+\.\d+\.\d+", service["image"]), service["image"]
            continue
        assert service["build"] == ".", name


def test_sharded_workers_split_one_manifest_into_one_folder_with_every_index_once(compose: dict) -> None:
    """Relies on `run --shard-index I --shard-count N` (the shards change)."""
    services = compose["services"]
    shards = _shards(compose)
    assert len(shards) >= 2, "the sharded example has N >= 2 workers"
    parsed = {name: _args(svc, name) for name, svc in shards.items()}
    for name, svc in shards.items():
        assert "--shard-index" in svc["command"], f"{name}: compose has no completion index; give it explicitly"

    n = len(shards)
    assert {a.shard_count for a in parsed.values()} == {n}, "--shard-count is the number of shard services"
    assert sorted(a.shard_index for a in parsed.values()) == list(range(n)), "each index 0..N-1 exactly once"
    assert len({a.manifest for a in parsed.values()}) == 1, "every shard runs the same manifest"
    assert len({a.out for a in parsed.values()}) == 1, "every shard writes the same folder"
    assert len({tuple(sorted(_mounts(svc).items())) for svc in shards.values()}) == 1, "and the same mounts"

    sandbox_port = _args(services["sandbox"]).port
    for name, svc in shards.items():
        a = parsed[name]
        assert a.command == "run"
        target = urlparse(a.base_url)
        assert (target.hostname, target.port) == ("sandbox", sandbox_port), name
        assert svc["depends_on"]["sandbox"]["condition"] == "service_healthy", name
        assert svc["environment"]["SEGMIND_API_KEY"], name
        mounts = _mounts(svc)
        manifest_dir = str(Path("/app") / a.manifest.parent)
        assert (ROOT / mounts[manifest_dir] / a.manifest.name).is_file(), name
        assert str(Path("/app") / a.out).startswith("/app/out/") and "/app/out" in mounts, name

    # Each shard has work: the manifest expands to more items than there are shards.
    a = next(iter(parsed.values()))
    assert len(load_manifest(ROOT / a.manifest).items) > n


def test_shards_status_reads_the_folder_the_shards_write(compose: dict) -> None:
    services = compose["services"]
    name, svc = next(iter(_shards(compose).items()))
    shard = _args(svc, name)
    status = _args(services["shards-status"], "shards-status")
    assert status.command == "status"
    assert status.out_dir == shard.out
    assert _mounts(services["shards-status"])["/app/out"] == _mounts(svc)["/app/out"]


def test_sharded_example_is_opt_in_and_leaves_the_single_worker_rehearsal_alone(compose: dict) -> None:
    """The shards and their status run only when named (or with their profile); the sandbox they
    depend on has no profile, so `docker compose up worker` and `up shard-0 ...` both start it."""
    services = compose["services"]
    opt_in = {*_shards(compose), "shards-status"}
    profiles = {tuple(services[name].get("profiles", ())) for name in opt_in}
    assert len(profiles) == 1 and profiles != {()}
    for name in ("sandbox", "worker"):
        assert "profiles" not in services[name], name


def test_the_s3_rehearsal_writes_to_a_bucket_the_compose_file_creates(compose: dict) -> None:
    """An S3-compatible service, a one-shot that makes the bucket, and a worker whose --out is in it;
    credentials and endpoint only in the standard AWS variables, never in a flag."""
    from batchgen.store.location import RemoteOutput

    services = compose["services"]
    s3, bucket_maker, worker, status = (services[n] for n in ("s3", "s3-bucket", "s3-worker", "s3-status"))
    port = int(s3["ports"][0].split(":")[-1])
    assert f":{port}/" in " ".join(s3["healthcheck"]["test"])
    args = _args(worker, "s3-worker")
    assert args.command == "run" and isinstance(args.out, RemoteOutput) and args.out.scheme == "s3"
    assert f"fs.mkdir('{args.out.bucket}')" in bucket_maker["entrypoint"][-1]
    for name, svc in (("s3-bucket", bucket_maker), ("s3-worker", worker), ("s3-status", status)):
        env = svc["environment"]
        endpoint = urlparse(env["AWS_ENDPOINT_URL"])
        assert (endpoint.hostname, endpoint.port) == ("s3", port), name
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(env), name
        assert not any("AWS" in a or "secret" in a.lower() for a in svc.get("command", [])), name
    assert worker["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["sandbox"]["condition"] == "service_healthy"
    assert bucket_maker["depends_on"]["s3"]["condition"] == "service_healthy"
    target = urlparse(args.base_url)
    assert (target.hostname, target.port) == ("sandbox", _args(services["sandbox"]).port)
    st = _args(status, "s3-status")
    assert st.command == "status" and st.out_dir == args.out
    assert {tuple(services[n].get("profiles", ())) for n in ("s3", "s3-bucket", "s3-worker", "s3-status")} == {("s3",)}
    assert '.[s3]' in (ROOT / "Dockerfile").read_text(), "the image can write to S3"
