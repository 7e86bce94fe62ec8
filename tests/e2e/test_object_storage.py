"""Output to S3 (moto's server on loopback, a real S3 API): killed runs resume to every image as an
object, nothing paid twice, the ledger read back from its segments by status, export and report;
one run per output (its lease), taken over once a killed run's lease has expired."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import anyio

from batchgen.store import ledger as L
from tests.support.cli import image_path, manifest_ids, run_cli, wait_for, write_manifest
from tests.support.images import decode_png

# Short lease and uploads; an intent a kill left unanswered is looked for in the emulator's history
# (which has no lag) for 3 s instead of the real service's 120 s.
SMALL = ("--lease-ttl", "1.5", "--upload-interval", "0.5", "--history-wait", "3")


def run_args(manifest: Path, url: str, sb_url: str, cache: Path, *extra: object) -> tuple[object, ...]:
    return ("run", manifest, "--base-url", sb_url, "--out", url, "--cache-dir", cache, "--no-progress", *SMALL, *extra)


def replay(s3, prefix: str = "out") -> L.LedgerState:
    """The ledger as the store holds it: its segments, in order."""
    folder = sorted(k for k in s3.keys(prefix) if k.startswith("ledgers/ledger.jsonl/"))
    state = L.LedgerState()
    for key in folder:
        for raw in s3.fs.cat_file(f"{s3.bucket}/{prefix}/{key}").splitlines():
            L.apply(state, json.loads(raw))
    return state


def assert_every_image_is_an_object(s3, ids: list[str], prefix: str = "out") -> None:
    images = [k for k in s3.keys(prefix) if k.startswith("images/")]
    assert images == sorted(image_path(i) for i in ids), "stray or missing objects under images/"
    for i in ids:
        png = decode_png(s3.fs.cat_file(f"{s3.bucket}/{prefix}/{image_path(i)}"))
        assert (png.width, png.height) == (640, 1024)


async def status_json(url: str, cache: Path) -> dict:
    r = await run_cli("status", url, "--json", "--cache-dir", cache, within=60)
    assert r.code == 0 and "Traceback" not in r.err, r.err
    return json.loads(r.out)


async def test_killed_twice_then_resumed_every_image_an_object_nothing_paid_twice(
    tmp_path: Path, sandbox_factory, start_cli, s3
) -> None:
    n, kills = 40, 2
    sb = await sandbox_factory(latency=0.4, latency_sigma=0.3)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    cache = tmp_path / "cache"
    args = run_args(manifest, s3.url(), sb.url, cache, "--concurrency", "8")
    for k in range(kills):
        target = (k + 1) * n // 3
        worker = await start_cli(*args)
        await wait_for(lambda t=target, w=worker: sb.stats()["submits_accepted"] >= t or w.returncode is not None,
                       within=60)
        assert worker.returncode is None, "the worker ended before it could be killed"
        worker.signal(signal.SIGKILL)
        assert (await worker.wait(within=20)).code == -signal.SIGKILL
        await anyio.sleep(1.7)  # its lease expires (a killed run never gives it back)

    final = await run_cli(*args, within=90)
    assert final.code == 0, (final.out, final.err)
    assert "-> s3://" in final.out
    ids = manifest_ids(n)
    assert_every_image_is_an_object(s3, ids)
    state = replay(s3)
    assert all(state.items[i].state == L.DOWNLOADED for i in ids)
    s = sb.stats()
    assert s["duplicates"] <= s["lost_submit_answers"], s  # one POST in flight, its intent stored first
    assert sum(st.submits for st in state.items.values()) == s["submits_accepted"]
    assert not any(k.startswith(".lock") for k in s3.keys()), "the lease is given back at the end"
    assert [k for k in s3.keys() if k.startswith("ledgers/")][0].endswith(".jsonl")
    assert len([k for k in s3.keys() if k.startswith("ledgers/")]) == 1, "folded into one object at the end"

    st = await status_json(s3.url(), tmp_path / "reader-cache")  # another machine: nothing local
    assert st["out_dir"] == s3.url() and st["items"] == n
    assert st["states"]["downloaded"] == n and st["missing_files"] == [] and st["last_run"]["ended"] == "finished"


async def test_a_lost_local_disk_after_sigkill_pays_nothing_twice(tmp_path: Path, sandbox_factory, start_cli, s3) -> None:
    """The worst case of the write-ahead design: the local file is gone with its machine, so every
    line since the last upload is lost. Intents are stored before their POST; the request history
    finds each lost answer by its body and each expired record by its id."""
    n = 24
    # Records expire 2 s after their submit: by the resume, every one is read from the history by id.
    sb = await sandbox_factory(latency=0.6, latency_sigma=0.2, history_lag=0.3, retention=2.0)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    cache = tmp_path / "cache"
    # Uploads only before each POST (the interval is longer than the run): answers are never uploaded.
    args = ("run", manifest, "--base-url", sb.url, "--out", s3.url(), "--cache-dir", cache, "--no-progress",
            "--lease-ttl", "2", "--upload-interval", "600", "--history-wait", "3", "--concurrency", "8")
    worker = await start_cli(*args)
    await wait_for(lambda: sb.stats()["submits_accepted"] >= 12 or worker.returncode is not None, within=60)
    assert worker.returncode is None
    worker.signal(signal.SIGKILL)
    await worker.wait(within=20)
    shutil.rmtree(cache)  # the machine is gone, and its disk with it
    await anyio.sleep(2.2)
    accepted_before = sb.stats()["submits_accepted"]
    assert accepted_before >= 12

    again = await run_cli(*args, within=120)
    assert again.code == 0, (again.out, again.err)
    assert_every_image_is_an_object(s3, manifest_ids(n))
    s = sb.stats()
    assert s["duplicates"] == 0, s
    assert s["submits_accepted"] == n and abs(s["charged_usd"] - n * 0.10) < 1e-9, s
    assert "found in the request history instead of paid again" in again.out


async def test_a_live_run_holds_the_output_and_a_second_is_refused(tmp_path: Path, sandbox_factory, start_cli, s3) -> None:
    sb = await sandbox_factory(latency=1.0, latency_sigma=0.0)
    manifest = write_manifest(tmp_path / "m.yaml", 40)  # 20 s at least: still running when stopped
    first = await start_cli(*run_args(manifest, s3.url(), sb.url, tmp_path / "c1", "--concurrency", "2"))
    await wait_for(lambda: sb.stats()["submits_accepted"] >= 1 or first.returncode is not None, within=30)
    assert first.returncode is None
    second = await run_cli(*run_args(manifest, s3.url(), sb.url, tmp_path / "c2"), within=30)
    assert second.code == 3, (second.out, second.err)
    assert "another batchgen run is using this output folder; wait for it to finish" in second.err and "Traceback" not in second.err
    st = await status_json(s3.url(), tmp_path / "c3")
    assert st["running_pid"] == first.proc.pid
    first.signal(signal.SIGTERM)
    assert (await first.wait(within=30)).code == 130
    assert not any(k.startswith(".lock") for k in s3.keys())


async def test_every_reading_command_takes_the_url(tmp_path: Path, sandbox_factory, s3) -> None:
    """plan, export, report, ledger repair and reconcile, from another machine's point of view (an
    empty cache folder): the ledger comes from its segments, the images from their objects."""
    sb = await sandbox_factory()
    n = 4
    manifest = write_manifest(tmp_path / "m.yaml", n)
    summary = tmp_path / "summary.json"
    run = await run_cli(*run_args(manifest, s3.url(), sb.url, tmp_path / "c", "--summary-json", summary), within=60)
    assert run.code == 0, run.err
    written = json.loads(summary.read_text())
    assert written["out_dir"] == s3.url() and written["states"]["downloaded"] == n and written["error"] is None
    reader = ("--cache-dir", tmp_path / "elsewhere")
    plan = await run_cli("plan", manifest, "--out", s3.url(), *reader, within=60)
    assert plan.code == 0 and f"-> {s3.url()}" in plan.out and f"done {n}, to submit 0" in plan.out, plan.err
    repair = await run_cli("ledger", "repair", s3.url(), *reader, within=60)
    assert repair.code == 0 and "every line is readable" in repair.out, repair.err
    rec = await run_cli("reconcile", s3.url(), "--base-url", sb.url, "--json", *reader, within=60)
    assert rec.code == 0, rec.err
    assert json.loads(rec.out)["matches"] is True
    dest = tmp_path / "export"
    r = await run_cli("export", s3.url(), "--format", "imagefolder", "--to", dest, *reader, within=60)
    assert r.code == 0, r.err
    rows = [json.loads(x) for x in (dest / "train" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == manifest_ids(n)
    for row in rows:
        assert (dest / "train" / row["file_name"]).read_bytes() == s3.fs.cat_file(
            f"{s3.bucket}/out/{image_path(row['id'])}")
    r = await run_cli("report", s3.url(), *reader, within=60)
    assert r.code == 0 and f"{s3.url()}/report.html" in r.out, r.err
    html = s3.fs.cat_file(f"{s3.bucket}/out/report.html").decode()
    assert html.count("data:image/") >= n and f"batchgen report: {s3.url()}" in html


async def test_store_trouble_is_one_line_without_a_secret(tmp_path: Path, s3) -> None:
    secret = "testing-secret-value-123"
    cases = {
        f"s3://{s3.bucket}-missing/x": ({}, "does not exist"),
        s3.url(): ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")},
                   "no credentials"),
        s3.url("elsewhere"): ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach the object store"),
    }
    for url, (env, says) in cases.items():
        r = await run_cli("status", url, "--cache-dir", tmp_path / "c", env=env, within=60)
        assert r.code == 2, (url, r.err)
        assert says in r.err and len(r.err.strip().splitlines()) == 1, r.err
        assert "Traceback" not in r.err and secret not in r.err + r.out


async def test_shards_share_one_bucket_each_with_its_own_lease_and_ledger(
    tmp_path: Path, sandbox_factory, start_cli, s3
) -> None:
    n = 12
    sb = await sandbox_factory(latency=0.3)
    manifest = write_manifest(tmp_path / "m.yaml", n)
    workers = [await start_cli(*run_args(manifest, s3.url(), sb.url, tmp_path / "c", "--shard-count", "2"),
                               env={"JOB_COMPLETION_INDEX": str(i)}) for i in range(2)]
    for w in workers:
        r = await w.wait(within=60)
        assert r.code == 0, (r.out, r.err)
    assert sb.stats()["submits_accepted"] == n  # every item once, by its own shard
    assert_every_image_is_an_object(s3, manifest_ids(n))
    assert {k.split("/")[1] for k in s3.keys() if k.startswith("ledgers/")} == {
        "ledger.shard-0000-of-0002.jsonl", "ledger.shard-0001-of-0002.jsonl"}
    st = await status_json(s3.url(), tmp_path / "reader")
    assert st["states"]["downloaded"] == n and st["shards"]["found"] == [0, 1]
