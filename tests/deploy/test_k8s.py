"""deploy/k8s cannot be applied here (no cluster), so it is validated against the Kubernetes API
schemas that kubernetes-validate ships, and its promises are checked by reading it: one shard per
completion index, flags batchgen's own parser accepts, the key only from a Secret, sizes that fit
the benchmarks."""

from __future__ import annotations

import re
import shlex
import zoneinfo
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import Version, all_versions

from batchgen.core.errors import ExitCode
from batchgen.manifest import load_manifest
from tests.deploy.cli_args import parse_cli
from tests.deploy.cron import check_cron

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the files are written for (cronjob.yaml, deploy/README.md): per-index
# back-off and podReplacementPolicy are on by default from 1.29.
OLDEST = "1.29"
VERSIONS = sorted({v for v in all_versions() if Version(v) >= Version(OLDEST)}, key=Version)


def _documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def docs() -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for _, doc in _documents():
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


@pytest.fixture(scope="module")
def cronjob(docs: dict[str, list[dict]]) -> dict:
    (cj,) = docs["CronJob"]
    return cj


def _job(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]


def _pod(cronjob: dict) -> dict:
    return _job(cronjob)["template"]["spec"]


def _container(cronjob: dict) -> dict:
    (c,) = _pod(cronjob)["containers"]
    return c


def _argv(cronjob: dict) -> list[str]:
    c = _container(cronjob)
    assert c["command"] == ["batchgen"], "the container runs the CLI itself, no shell in between"
    return list(c["args"])


def _parse_in_pod(argv: list[str], monkeypatch: pytest.MonkeyPatch, where: str = "deploy/k8s/cronjob.yaml"):
    """Parse as the pod would: the Job controller sets JOB_COMPLETION_INDEX in every shard's pod."""
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    monkeypatch.delenv("AWS_BATCH_JOB_ARRAY_INDEX", raising=False)
    return parse_cli(argv, where)


def _quantity(text: str | int) -> float:
    """A Kubernetes quantity in base units (bytes, cores): '512Mi', '1', '100m'."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi)?", str(text))
    assert m, f"unexpected quantity {text!r}"
    scale = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(m.group(1)) * scale[m.group(2)]


def test_the_package_ships_schemas_for_the_versions_the_files_claim() -> None:
    assert VERSIONS, f"kubernetes-validate ships no schema for Kubernetes {OLDEST} or later"
    assert Version(kubernetes_validate.latest_version()) >= Version(OLDEST)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_validates_strictly(version: str) -> None:
    seen = set()
    for name, doc in _documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']} is invalid for Kubernetes {version}: "
                        f"{e.message}", pytrace=False)
        seen.add(doc["kind"])
    assert {"CronJob", "PersistentVolumeClaim", "ConfigMap", "Secret"} <= seen


def test_the_job_is_indexed_with_every_shard_running_at_once(cronjob: dict) -> None:
    job = _job(cronjob)
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] >= 2
    # A pod failure policy and per-index back-off both need restartPolicy Never.
    assert _pod(cronjob)["restartPolicy"] == "Never"
    assert job["backoffLimitPerIndex"] >= 1
    assert job["backoffLimit"] >= job["backoffLimitPerIndex"]
    # A replacement must not start while the old pod still holds the shard's lock.
    assert job["podReplacementPolicy"] == "Failed"


def test_failures_are_retried_only_where_batchgen_says_a_retry_can_help(cronjob: dict) -> None:
    rules = _job(cronjob)["podFailurePolicy"]["rules"]
    by_action: dict[str, list[dict]] = {}
    for rule in rules:
        by_action.setdefault(rule["action"], []).append(rule)
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == _container(cronjob)["name"]
            assert rule["onExitCodes"]["operator"] == "In"
    (ignore,) = by_action["Ignore"]
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    (fail_job,) = by_action["FailJob"]
    assert fail_job["onExitCodes"]["values"] == [ExitCode.BAD_INPUT]
    (fail_index,) = by_action["FailIndex"]
    assert fail_index["onExitCodes"]["values"] == [ExitCode.FAILED_ITEMS]
    # Interrupted and aborted runs resume: no rule may stop their retries.
    handled = {code for rule in rules for code in rule.get("onExitCodes", {}).get("values", [])}
    assert not handled & {ExitCode.INTERRUPTED, ExitCode.ABORTED}


def test_the_command_parses_with_batchgen_and_matches_the_job(
    cronjob: dict, docs: dict[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relies on `run --shard-count N` with the index from JOB_COMPLETION_INDEX (the shards change)."""
    argv = _argv(cronjob)
    args = _parse_in_pod(argv, monkeypatch)
    assert args.command == "run"
    assert args.shard_count == _job(cronjob)["completions"], "--shard-count must equal completions"
    assert "--shard-index" not in argv, "each pod's shard is its completion index, read from the environment"
    assert args.rpm and args.rpm > 0
    assert args.log_format == "json" and args.no_progress

    mounts = {m["name"]: m for m in _container(cronjob)["volumeMounts"]}
    out = Path(mounts["out"]["mountPath"])
    assert out in Path(args.out).parents and not mounts["out"].get("readOnly")
    assert out in Path(args.summary_json).parents
    manifest_dir = Path(mounts["manifest"]["mountPath"])
    assert Path(args.manifest).parent == manifest_dir
    (cm,) = docs["ConfigMap"]
    assert Path(args.manifest).name in cm["data"]


def test_each_shard_writes_its_own_summary(cronjob: dict) -> None:
    """$(VAR) in args is expanded by the kubelet only from the container's env: every reference must
    be declared there, and the index must be the pod's completion index."""
    c = _container(cronjob)
    env = {e["name"]: e for e in c["env"]}
    refs = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c["args"])))
    assert refs <= set(env), f"undeclared variables in args: {refs - set(env)}"
    summary = c["args"][c["args"].index("--summary-json") + 1]
    assert "$(JOB_COMPLETION_INDEX)" in summary, "shards sharing one folder must not share one summary file"
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")


def test_the_manifest_in_the_configmap_loads_and_gives_every_shard_work(
    cronjob: dict, docs: dict[str, list[dict]], tmp_path: Path
) -> None:
    (cm,) = docs["ConfigMap"]
    for name, text in cm["data"].items():  # as the ConfigMap volume lays them out: one file a key
        (tmp_path / name).write_text(text)
    argv = _argv(cronjob)
    manifest = load_manifest(tmp_path / Path(argv[argv.index("run") + 1]).name)
    assert len(manifest.items) > _job(cronjob)["completions"]
    volumes = {v["name"]: v for v in _pod(cronjob)["volumes"]}
    assert volumes["manifest"]["configMap"]["name"] == cm["metadata"]["name"]


def test_the_output_is_one_read_write_many_volume(cronjob: dict, docs: dict[str, list[dict]]) -> None:
    (pvc,) = docs["PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every shard's pod writes the same folder"
    volumes = {v["name"]: v for v in _pod(cronjob)["volumes"]}
    assert volumes["out"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_the_api_key_comes_only_from_a_secret(cronjob: dict, docs: dict[str, list[dict]]) -> None:
    c = _container(cronjob)
    env = {e["name"]: e for e in c["env"]}
    ref = env["SEGMIND_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional"), "a missing Secret must stop the pod, not start a run without a key"
    secrets = {s["metadata"]["name"]: s for s in docs["Secret"]}
    assert ref["key"] in secrets[ref["name"]]["stringData"]
    assert "envFrom" not in c
    for e in c["env"]:
        if re.search(r"KEY|TOKEN|SECRET|PASSWORD", e["name"]):
            assert "value" not in e, f"{e['name']} holds a literal value"
    # The example Secrets show the shape only; every value is empty.
    for s in docs["Secret"]:
        assert "data" not in s
        assert all(v == "" for v in s["stringData"].values()), s["metadata"]["name"]
    for path in [*K8S.glob("*.yaml"), ROOT / "deploy" / "README.md", ROOT / "docker-compose.yml"]:
        assert not re.search(r"\bSG_[A-Za-z0-9]{6,}", path.read_text()), f"{path.name} holds what looks like a key"
    assert not any("SG_" in a or "SEGMIND_API_KEY" in a for a in c["args"])


def test_requests_and_limits_fit_the_benchmarked_peak(cronjob: dict) -> None:
    bench = (ROOT / "BENCHMARKS.md").read_text()
    m = re.search(r"^\| P4 \| worker peak RSS, MB \| ([\d.]+) \|", bench, re.M)
    assert m, "BENCHMARKS.md has no P4 peak RSS row"
    peak_mb = float(m.group(1))
    assert f"{m.group(1)} MB" in (K8S / "cronjob.yaml").read_text(), (
        "cronjob.yaml sizes memory from another P4 figure than BENCHMARKS.md's: resize and update the comment")
    res = _container(cronjob)["resources"]
    assert _quantity(res["requests"]["memory"]) >= peak_mb * 2**20
    assert _quantity(res["limits"]["memory"]) > _quantity(res["requests"]["memory"])
    assert _quantity(res["limits"]["cpu"]) >= 1, "the manifest load runs one core flat out (P4)"
    assert 0 < _quantity(res["requests"]["cpu"]) <= _quantity(res["limits"]["cpu"])


def test_the_pod_runs_as_non_root_without_privileges(cronjob: dict) -> None:
    pod = _pod(cronjob)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    sc = _container(cronjob)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    if sc.get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"] for m in _container(cronjob)["volumeMounts"]}
        assert "/tmp" in mounts, "a read-only image still needs a writable /tmp"


def test_the_schedule_is_a_valid_nightly_cron_with_a_window_shorter_than_a_day(cronjob: dict) -> None:
    spec = cronjob["spec"]
    assert check_cron(spec["schedule"]) is None, check_cron(spec["schedule"])
    minute, hour, *rest = spec["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"], "once a night"
    zoneinfo.ZoneInfo(spec["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 3600 <= _job(cronjob)["activeDeadlineSeconds"] < 24 * 3600


@pytest.mark.parametrize("expr, ok", [
    ("15 2 * * *", True), ("*/5 0-6 1,15 JAN-MAR MON-FRI", True), ("@daily", True), ("0 0 ? * 7", True),
    ("60 2 * * *", False), ("15 24 * * *", False), ("15 2 * *", False), ("15 2 0 * *", False),
    ("15 2 * 13 *", False), ("*/0 * * * *", False), ("5-1 * * * *", False), ("@nightly", False),
])
def test_the_cron_check_itself(expr: str, ok: bool) -> None:
    assert (check_cron(expr) is None) == ok


def test_the_key_per_shard_pattern_in_the_docs_parses_and_matches_its_secret(
    cronjob: dict, docs: dict[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relies on `--rpm-per-shard` besides the shard flags."""
    text = (ROOT / "deploy" / "README.md").read_text()
    section = text.split("## One key per shard", 1)[1]
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    (c,) = block["containers"]
    assert c["command"][:2] == ["/bin/sh", "-c"]
    words = shlex.split(c["args"][0])
    argv = words[words.index("exec") + 2:]  # after `exec batchgen`
    assert words[words.index("exec") + 1] == "batchgen"
    n = _job(cronjob)["completions"]
    args = _parse_in_pod([w.replace("$JOB_COMPLETION_INDEX", "0") for w in argv], monkeypatch,
                         "deploy/README.md, One key per shard")
    assert args.shard_count == n and args.rpm_per_shard

    key_file = re.search(r'"\$\(cat ([^)]+)\)"', c["args"][0]).group(1)
    (mount,) = c["volumeMounts"]
    assert Path(key_file).parent == Path(mount["mountPath"])
    (volume,) = block["volumes"]
    assert volume["name"] == mount["name"]
    secrets = {s["metadata"]["name"]: s for s in docs["Secret"]}
    keys = secrets[volume["secret"]["secretName"]]["stringData"]
    assert {Path(key_file).name.replace("$JOB_COMPLETION_INDEX", str(i)) for i in range(n)} == set(keys)
