"""deploy/k8s/s3: the nightly Indexed Job writing to S3 instead of a shared volume. Validated
against the Kubernetes schemas like deploy/k8s, and checked to be the same Job as
deploy/k8s/cronjob.yaml but for where the output goes and the bucket's credentials."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from batchgen.store.location import RemoteOutput
from tests.deploy.test_k8s import K8S, VERSIONS, _parse_in_pod

S3 = K8S / "s3"


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def volume_job() -> dict:
    (cj,) = [d for d in _load(K8S / "cronjob.yaml") if d["kind"] == "CronJob"]
    return cj


@pytest.fixture(scope="module")
def s3_job() -> dict:
    (cj,) = [d for d in _load(S3 / "cronjob.yaml") if d["kind"] == "CronJob"]
    return cj


def _pod(cj: dict) -> dict:
    return cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _container(cj: dict) -> dict:
    (c,) = _pod(cj)["containers"]
    return c


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_validates_strictly(version: str) -> None:
    kinds = set()
    for path in sorted(S3.glob("*.yaml")):
        for doc in _load(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"s3/{path.name}: {doc['kind']} is invalid for Kubernetes {version}: {e.message}",
                            pytrace=False)
            kinds.add(doc["kind"])
    assert kinds == {"CronJob", "Secret"}


def test_it_is_the_same_job_but_for_the_output(volume_job: dict, s3_job: dict) -> None:
    """One CronJob or the other (same name): the schedule, the shards and every retry rule alike."""
    assert s3_job["metadata"]["name"] == volume_job["metadata"]["name"]
    strip = ("jobTemplate",)
    assert {k: v for k, v in s3_job["spec"].items() if k not in strip} == {
        k: v for k, v in volume_job["spec"].items() if k not in strip}
    job_s3, job_vol = s3_job["spec"]["jobTemplate"]["spec"], volume_job["spec"]["jobTemplate"]["spec"]
    assert {k: v for k, v in job_s3.items() if k != "template"} == {k: v for k, v in job_vol.items() if k != "template"}
    c_s3, c_vol = _container(s3_job), _container(volume_job)
    for key in ("image", "command", "resources", "securityContext"):
        assert c_s3[key] == c_vol[key], key
    assert _pod(s3_job)["securityContext"]["runAsUser"] == _pod(volume_job)["securityContext"]["runAsUser"]


def test_the_output_is_a_bucket_and_the_local_side_a_pod_disk(s3_job: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _container(s3_job)
    args = _parse_in_pod(list(c["args"]), monkeypatch, "deploy/k8s/s3/cronjob.yaml")
    assert isinstance(args.out, RemoteOutput) and args.out.scheme == "s3"
    assert args.shard_count == s3_job["spec"]["jobTemplate"]["spec"]["completions"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(s3_job)["volumes"]}
    assert not any("persistentVolumeClaim" in v for v in volumes.values()), "no shared volume"
    cache = volumes[mounts[str(args.cache_dir)]]
    assert "emptyDir" in cache
    assert Path(str(args.cache_dir)) in Path(args.summary_json).parents
    assert "$(JOB_COMPLETION_INDEX)" in str(args.summary_json)
    assert "/tmp" in mounts, "a read-only image still needs a writable /tmp"


def test_a_killed_pods_lease_expires_within_the_retries(s3_job: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod killed outright keeps its shard's lease for --lease-ttl; its replacement exits 3 until
    then, and the Job's back-off (10 s, doubling) must outlast the lease within the index's tries."""
    args = _parse_in_pod(list(_container(s3_job)["args"]), monkeypatch, "deploy/k8s/s3/cronjob.yaml")
    tries = s3_job["spec"]["jobTemplate"]["spec"]["backoffLimitPerIndex"]
    assert sum(10 * 2**i for i in range(tries - 1)) > args.lease_ttl


def test_credentials_come_only_from_secrets(s3_job: dict) -> None:
    c = _container(s3_job)
    env = {e["name"]: e for e in c["env"]}
    secrets = {s["metadata"]["name"]: s for s in _load(S3 / "secret.example.yaml") + _load(K8S / "secret.example.yaml")}
    for name in ("SEGMIND_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional") and ref["key"] in secrets[ref["name"]]["stringData"], name
    for e in c["env"]:
        if re.search(r"KEY|TOKEN|SECRET|PASSWORD", e["name"]):
            assert "value" not in e, f"{e['name']} holds a literal value"
    assert all(v == "" for v in secrets["batchgen-s3"]["stringData"].values())
    refs = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c["args"])))
    assert refs <= set(env)
