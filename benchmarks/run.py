#!/usr/bin/env python3
"""Benchmarks: batchgen against the emulator, side by side with the official SDK.

The emulator runs in its own process so the worker's CPU time and peak memory are read from the
operating system's accounting of the worker process alone (``os.wait4``). Each scenario prints a
row; the whole run is written as JSON.

    python benchmarks/run.py                 # every scenario, full size (about 15 minutes)
    python benchmarks/run.py --smoke         # tiny sizes: proves the harness works (CI)
    python benchmarks/run.py --only P1,P3    # some scenarios
    python benchmarks/run.py --only P2,P2h --previous /tmp/prev   # P2 (or P4) beside the previous main

P4m (a 1M-row prompts file, a finished 1M-item ledger; benchmarks/p4.py) is left out of ``--smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEY = "bench-key"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import markdown_table, ratio  # noqa: E402  (beside this script)
from trees import precompile  # noqa: E402


@dataclass
class Scenario:
    id: str
    title: str
    items: int
    concurrency: int
    sandbox_flags: list[str]
    worker_flags: list[str] = field(default_factory=list)
    baseline: str | None = None  # "sdk" | "fixed-poller"
    targets: dict[str, str] = field(default_factory=dict)
    before_after: bool = False  # with --previous: also run the previous main's worker (P2 family)


def scenarios(smoke: bool) -> list[Scenario]:
    def n(full: int, small: int) -> int:
        return small if smoke else full

    return [
        Scenario(
            "P1", "zero latency, no rate limit", n(5000, 60), 256,
            ["--latency", "0", "--latency-sigma", "0"],
            baseline="sdk",
            targets={"cpu_ms_per_image": "<= 1.5"},
            before_after=True,
        ),
        # A cold first wave: every item submitted before any has finished (issue 13's targets).
        Scenario(
            "P2", "realistic latency x0.1", n(300, 20), 300,
            ["--latency", "21.6", "--time-scale", "0.1"],
            baseline="fixed-poller",
            targets={"polls_per_image": "<= 1.7", "ready_to_fetch_median_pct": "<= 25"},
            before_after=True,
        ),
        Scenario(
            "P2h", "as P2, 150 items at once", n(150, 20), 150,
            ["--latency", "21.6", "--time-scale", "0.1"],
            targets={"polls_per_image": "<= 1.7", "ready_to_fetch_median_pct": "<= 25"},
            before_after=True,
        ),
        Scenario(
            "P2f", "as P2, polls declared free (--rpm-scope submit)", n(300, 20), 300,
            ["--latency", "21.6", "--time-scale", "0.1"],
            ["--rpm-scope", "submit"],
            targets={"polls_per_image": "<= 2.0", "ready_to_fetch_median_pct": "<= 5"},
            before_after=True,
        ),
        Scenario(
            "P3", "server --rpm 600 (given to the worker)", n(2000, 20), 64,
            ["--latency", "0", "--latency-sigma", "0", "--rpm", "600"],
            ["--rpm", "600", "--rpm-scope", "submit"],
            targets={"submits_per_min_pct_of_limit": ">= 95", "rate_limited_pct": "<= 3"},
        ),
        Scenario(
            "P3d", "server --rpm 600 (discovered)", n(2000, 40), 64,
            ["--latency", "0", "--latency-sigma", "0", "--rpm", "600"],
            targets={"submits_per_min_pct_of_limit": ">= 95", "rate_limited_pct": "<= 10"},
        ),
        Scenario(
            "P4", "100k-item manifest, zero latency", n(100_000, 500), 512,
            ["--latency", "0", "--latency-sigma", "0"],
            targets={"peak_rss_mb": "<= 200", "plan_s": "<= 3", "plan_peak_rss_mb": "<= 200", "resume_s": "<= 3",
                     "resume_requests": "== 0"},
            before_after=True,
        ),
        *([] if smoke else [Scenario(
            "P4m", "1M-row JSONL prompts file: plan, and replay of a finished 1M-item ledger", 1_000_000, 0, [],
            targets={"plan_s": "<= 20", "plan_peak_rss_mb": "<= 1024", "replay_s": "<= 20"},
            before_after=True,
        )]),
        Scenario(
            "P5", "server --rpm 300, latency x0.1", n(1000, 15), 128,
            ["--latency", "21.6", "--time-scale", "0.1", "--rpm", "300"],
            ["--rpm", "300", "--rpm-scope", "submit"],
            targets={"makespan_vs_ideal": "<= 1.10"},
        ),
        Scenario(
            "P6", "Pro plan: --rpm 50, every request counted, x0.1", n(200, 10), 32,
            ["--latency", "21.6", "--time-scale", "0.1", "--rpm", "50", "--rpm-scope", "all"],
            ["--rpm", str(50 / 0.1), "--rpm-scope", "all"],
            targets={"images_per_scaled_min": ">= 15.5"},
            before_after=True,
        ),
        Scenario(
            "P6h", "as P6, 100 items", n(100, 10), 32,
            ["--latency", "21.6", "--time-scale", "0.1", "--rpm", "50", "--rpm-scope", "all"],
            ["--rpm", str(50 / 0.1), "--rpm-scope", "all"],
            targets={"images_per_scaled_min": ">= 14.5"},
            before_after=True,
        ),
    ]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class SandboxProcess:
    def __init__(self, flags: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PY, "-m", "batchgen", "sandbox", "--port", str(self.port), "--fault-seed", "1",
             "--credits", "1000000000", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sandbox did not start: " + (self.proc.stderr.read() if self.proc.stderr else ""))

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_sandbox/stats", timeout=5) as r:
            return json.load(r)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def write_manifest(path: Path, n: int, tag: str) -> None:
    lines = ["name: bench", "model: ideogram-txt-2-img", "items:"]
    for i in range(n):
        lines.append(f'  - {{id: "i{i:06d}", prompt: "{tag} benchmark prompt number {i}", seed: {100 + i}}}')
    path.write_text("\n".join(lines) + "\n")


def run_worker(manifest: Path, out: Path, url: str, concurrency: int, flags: list[str],
               source: Path | None = None) -> dict[str, Any]:
    """Run the worker as a child and read its CPU time and peak RSS from the kernel's accounting.

    ``source``: a checkout whose ``batchgen`` package runs instead of this one (the previous main)."""
    env = dict(os.environ, SEGMIND_API_KEY=KEY)
    if source is not None:  # ahead of this checkout, which -m would otherwise put first (the current folder)
        env.update(PYTHONPATH=str(source), PYTHONSAFEPATH="1")
    cmd = [PY, "-m", "batchgen", "run", str(manifest), "--out", str(out), "--base-url", url,
           "--concurrency", str(concurrency), "--no-progress", *flags]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": proc.returncode,
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024,
        "stdout": stdout[-400:],
        "stderr": stderr[-400:],
    }


def sdk_baseline(url: str, n: int, concurrency: int, interval: float | None) -> dict[str, Any]:
    """The SDK as its documentation suggests for many requests: submit_async + wait() in a thread pool."""
    code = f"""
import concurrent.futures, httpx, sys, threading
from segmind import SegmindClient
local = threading.local()  # clients per thread: one httpx client shared by 256 threads lost sockets
def one(i):
    if not hasattr(local, "sdk"):
        local.sdk = SegmindClient(api_key={KEY!r}, base_url={url + '/v1'!r})
    job = local.sdk.submit_async("ideogram-txt-2-img", prompt=f"sdk baseline prompt number {{i}}", seed=100 + i)
    res = job.wait(**({{"interval": {interval!r}}} if {interval!r} is not None else {{}}))
    url = res["images"][0] if res.get("images") else res["output"][0]
    if not hasattr(local, "http"):
        local.http = httpx.Client()
    return len(local.http.get(url).content)
with concurrent.futures.ThreadPoolExecutor({concurrency}) as pool:
    sizes = list(pool.map(one, range({n})))
print(len(sizes))
"""
    t0 = time.monotonic()
    proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024,
        "stderr": (proc.stderr.read().decode() if proc.stderr else "")[-400:],
    }


def per_image(stats: dict[str, Any], done: int) -> dict[str, float]:
    d = max(1, done)
    return {
        "requests_per_image": (stats["submit_requests"] + stats["status_polls"] + stats["result_fetches"]) / d,
        "polls_per_image": stats["status_polls"] / d,
    }


def previous_main(sc: Scenario, tmp: Path, source: Path) -> dict[str, Any]:
    """The same scenario with the previous main's worker, on a fresh emulator (same run, same machine)."""
    sb = SandboxProcess(sc.sandbox_flags)
    try:
        manifest = tmp / f"{sc.id}-prev.yaml"
        write_manifest(manifest, sc.items, sc.id)
        s0 = sb.stats()
        w = run_worker(manifest, tmp / f"{sc.id}-prev-out", sb.url, sc.concurrency, sc.worker_flags, source)
        s1 = sb.stats()
    finally:
        sb.close()
    delta = {k: s1[k] - s0[k] for k in ("submit_requests", "status_polls", "result_fetches")}
    med = (s1.get("ready_to_fetch_s") or {}).get("median")
    return {
        "source": str(source),
        "exit_code": w["exit_code"],
        "wall_s": round(w["wall_s"], 3),
        "cpu_ms_per_image": round(1000 * w["cpu_s"] / max(1, sc.items), 3),
        **{k: round(v, 3) for k, v in per_image(delta, sc.items).items()},
        "ready_to_fetch_median_pct": None if med is None else round(100 * med / (21.6 * 0.1), 2),
    }


def measure(sc: Scenario, tmp: Path, previous: Path | None = None, source: Path | None = None) -> dict[str, Any]:
    if previous is not None and sc.before_after:
        if sc.id.startswith(("P1", "P4", "P6")):  # the whole scenario's figures: run all of it again
            (tmp / "previous").mkdir(exist_ok=True)
            before = measure(replace(sc, baseline=None), tmp / "previous", source=previous)
        else:
            before = previous_main(sc, tmp, previous)
        row = measure(sc, tmp)
        row["previous"] = before
        return row
    if sc.id == "P4m":
        from p4 import rows_figures

        data = (tmp.parent if source is not None else tmp) / "p4m"  # one set of files for both workers
        return {"id": sc.id, "title": sc.title, "items": sc.items, **rows_figures(data, sc.items, source),
                "targets": sc.targets}
    sb = SandboxProcess(sc.sandbox_flags)
    try:
        manifest = tmp / f"{sc.id}.yaml"
        write_manifest(manifest, sc.items, sc.id)
        out = tmp / f"{sc.id}-out"
        s0 = sb.stats()
        w = run_worker(manifest, out, sb.url, sc.concurrency, sc.worker_flags, source)
        s1 = sb.stats()
        delta = {k: s1[k] - s0[k] for k in ("submit_requests", "submits_accepted", "status_polls", "result_fetches", "rate_limited", "downloads")}
        done = delta["submits_accepted"]
        row: dict[str, Any] = {
            "id": sc.id,
            "title": sc.title,
            "items": sc.items,
            "exit_code": w["exit_code"],
            "wall_s": round(w["wall_s"], 3),
            "images_per_s": round(sc.items / w["wall_s"], 2),
            "cpu_ms_per_image": round(1000 * w["cpu_s"] / max(1, sc.items), 3),
            "peak_rss_mb": round(w["peak_rss_mb"], 1),
            **{k: round(v, 3) for k, v in per_image(delta, sc.items).items()},
            "rate_limited": delta["rate_limited"],
            "rate_limited_pct": round(100 * delta["rate_limited"] / max(1, delta["submit_requests"]), 2),
            "ready_to_fetch": s1.get("ready_to_fetch_s"),
            "targets": sc.targets,
        }
        if w["exit_code"] != 0:
            row["worker_stderr"] = w["stderr"]
        if sc.id in ("P2", "P2h", "P2f", "P5", "P6", "P6h"):
            mean_latency = 21.6 * 0.1
            med = (s1.get("ready_to_fetch_s") or {}).get("median")
            if med is not None:
                row["ready_to_fetch_median_pct"] = round(100 * med / mean_latency, 2)
        if sc.id in ("P3", "P3d"):
            minutes = w["wall_s"] / 60
            row["submits_per_min"] = round(done / minutes, 1)
            row["submits_per_min_pct_of_limit"] = round(100 * done / minutes / 600, 1)
        if sc.id == "P5":
            ideal = sc.items / (300 / 60) + 21.6 * 0.1 * 2.0  # items / rate + a latency tail
            row["makespan_vs_ideal"] = round(w["wall_s"] / ideal, 3)
        if sc.id in ("P6", "P6h"):
            scaled_minutes = w["wall_s"] / 60 / 0.1
            row["images_per_scaled_min"] = round(sc.items / scaled_minutes, 2)
        if sc.id == "P4":
            from p4 import plan_figures

            s2 = sb.stats()
            again = run_worker(manifest, out, sb.url, sc.concurrency, sc.worker_flags, source)
            s3 = sb.stats()
            row["resume_s"] = round(again["wall_s"], 3)
            row["resume_cpu_s"] = round(again["cpu_s"], 3)
            row["resume_peak_rss_mb"] = round(again["peak_rss_mb"], 1)
            row["resume_exit_code"] = again["exit_code"]
            row["resume_requests"] = s3["requests_total"] - s2["requests_total"] - 1  # less our own stats read
            row.update(plan_figures(manifest, tmp / "p4-plan", source))
        if sc.baseline:
            # The SDK's default 1.0 s interval in service time: 0.1 s under --time-scale 0.1. With
            # zero latency (P1) the first status poll already finds the job done; the default stays.
            interval = 1.0 * 0.1 if sc.baseline == "fixed-poller" else None
            # A fresh emulator with the same flags, so its counters and delays are the SDK's alone.
            bsb = SandboxProcess(sc.sandbox_flags)
            try:
                b0 = bsb.stats()
                b = sdk_baseline(bsb.url, sc.items, sc.concurrency, interval)
                b1 = bsb.stats()
            finally:
                bsb.close()
            bd = {k: b1[k] - b0[k] for k in ("submit_requests", "status_polls", "result_fetches")}
            row["baseline"] = {
                "kind": f"segmind 1.3.0 submit_async+wait({'' if interval is None else f'interval={interval:g}'})"
                        f" in {sc.concurrency} threads, each output downloaded",
                "exit_code": b["exit_code"],
                "wall_s": round(b["wall_s"], 3),
                "cpu_ms_per_image": round(1000 * b["cpu_s"] / max(1, sc.items), 3),
                **{k: round(v, 3) for k, v in per_image(bd, sc.items).items()},
            }
            if sc.baseline == "fixed-poller":
                bmed = (b1.get("ready_to_fetch_s") or {}).get("median")
                if bmed is not None:
                    row["baseline"]["ready_to_fetch_median_pct"] = round(100 * bmed / (21.6 * 0.1), 2)
            if b["exit_code"] != 0:
                row["baseline"]["stderr"] = b["stderr"]
            bl = row["baseline"]
            row["vs_baseline"] = {
                "cpu_per_image": ratio(row["cpu_ms_per_image"], bl["cpu_ms_per_image"]),
                "requests_per_image": ratio(row["requests_per_image"], bl["requests_per_image"]),
                "wall": ratio(row["wall_s"], bl["wall_s"]),
            }
        return row
    finally:
        sb.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the harness")
    ap.add_argument("--only", help="comma-separated scenario ids")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--previous", type=Path, help="a checkout of the previous main: the P2 scenarios run its "
                    "worker too, for a before/after in the same run (e.g. git archive main batchgen | tar -x -C DIR)")
    args = ap.parse_args()
    chosen = scenarios(args.smoke)
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [s for s in chosen if s.id in wanted]
    precompile(None, args.previous)
    rows = []
    with tempfile.TemporaryDirectory(prefix="batchgen-bench-") as tmp:
        for sc in chosen:
            row = measure(sc, Path(tmp), args.previous)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("targets",)}), flush=True)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "smoke": args.smoke,
        "rows": rows,
    }
    result["table"] = markdown_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(result["table"])
    failed = [r["id"] for r in rows if r["exit_code"] != 0 or (r.get("baseline") or {}).get("exit_code", 0) != 0]
    print(f"wrote {args.json}; {len(rows)} scenarios" + (f"; non-zero exits: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
