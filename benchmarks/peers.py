#!/usr/bin/env python3
"""Ratio to peers: batchgen beside the official SDK and a plain asyncio loop, on one emulator.

Each scenario starts one emulator and runs the three clients one after the other against it, each
as a child process (its CPU time from ``os.wait4``, so the emulator's work is not counted); the
emulator's counters before and after each client give its requests and its ready→fetch delays.

- batchgen: ``python -m batchgen run`` at the same concurrency, default flags (ledger, fsync'd
  verified images, the learned poll schedule).
- SDK: segmind 1.3.0, ``submit_async`` + ``wait()`` in a thread pool of the same size (a client per thread), each output
  downloaded with httpx (one client per thread) and written to a file; ``wait()``'s 1.0 s interval
  time-scaled like the server (0.1 s at x0.1; at zero latency its first poll finds the job done).
- plain loop: asyncio + aiohttp, a semaphore of the same size; submit, first status poll at an
  EWMA of the latencies seen so far (0.5 s before any), then every quarter of it; result, download,
  a plain file write (no fsync, no ledger, no checks): the floor of a worker that keeps nothing.

    python benchmarks/peers.py              # both scenarios, full size (about 4 minutes)
    python benchmarks/peers.py --smoke      # tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import KEY, PY, SandboxProcess, run_worker, write_manifest  # noqa: E402  (beside this script)
from trees import precompile  # noqa: E402

SDK = f"""
import concurrent.futures, sys, threading, httpx
from segmind import SegmindClient
url, n, conc, interval, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
local = threading.local()  # a client per thread: one httpx client shared by 256 threads lost sockets
def one(i):
    if not hasattr(local, "sdk"):
        local.sdk = SegmindClient(api_key={KEY!r}, base_url=url + "/v1")
    job = local.sdk.submit_async("ideogram-txt-2-img", prompt=f"sdk peer prompt number {{i}}", seed=100 + i)
    res = job.wait(**({{}} if interval == "default" else {{"interval": float(interval)}}))
    link = res["images"][0] if res.get("images") else res["output"][0]
    if not hasattr(local, "http"):
        local.http = httpx.Client()
    data = local.http.get(link).content
    with open(f"{{out}}/{{i}}.png", "wb") as f:
        f.write(data)
    return len(data)
with concurrent.futures.ThreadPoolExecutor(conc) as pool:
    sizes = list(pool.map(one, range(n)))
print(len(sizes))
"""

PLAIN = f"""
import asyncio, sys, aiohttp
url, n, conc, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
H = {{"x-api-key": {KEY!r}, "Content-Type": "application/json"}}
ewma = None
async def one(s, sem, i):
    global ewma
    async with sem:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with s.post(url + "/v2/ideogram-txt-2-img", json={{"prompt": f"plain peer prompt number {{i}}", "seed": 100 + i}}, headers=H) as r:
            rid = (await r.json())["request_id"]
        wait = ewma if ewma is not None else 0.5
        await asyncio.sleep(wait)
        while True:
            async with s.get(f"{{url}}/v2/requests/{{rid}}/status", headers=H) as r:
                st = (await r.json())["status"]
            if st == "COMPLETED":
                break
            if st == "FAILED":
                raise RuntimeError(rid)
            await asyncio.sleep(max(0.01, (ewma or 0.5) / 4))
        seen = loop.time() - t0
        ewma = seen if ewma is None else 0.8 * ewma + 0.2 * seen
        async with s.get(f"{{url}}/v2/requests/{{rid}}", headers=H) as r:
            res = await r.json()
        async with s.get(res["images"][0]) as r:
            data = await r.read()
        with open(f"{{out}}/{{i}}.png", "wb") as f:
            f.write(data)
async def main():
    sem = asyncio.Semaphore(conc)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        await asyncio.gather(*(one(s, sem, i) for i in range(n)))
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def child(code: str, args: list[str]) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.Popen([PY, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    return {"exit_code": os.waitstatus_to_exitcode(status), "wall_s": time.monotonic() - t0,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "stderr": (proc.stderr.read().decode() if proc.stderr else "")[-400:]}


def figures(got: dict[str, Any], s0: dict[str, Any], s1: dict[str, Any], n: int, mean_latency: float | None) -> dict[str, Any]:
    req = sum(s1[k] - s0[k] for k in ("submit_requests", "status_polls", "result_fetches"))
    row = {
        "exit_code": got["exit_code"],
        "wall_s": round(got["wall_s"], 3),
        "cpu_ms_per_image": round(1000 * got["cpu_s"] / n, 3),
        "requests_per_image": round(req / n, 3),
        "polls_per_image": round((s1["status_polls"] - s0["status_polls"]) / n, 3),
    }
    med = (s1.get("ready_to_fetch_s") or {}).get("median")
    if mean_latency and med is not None:
        row["ready_to_fetch_median_pct"] = round(100 * med / mean_latency, 2)
    if got["exit_code"] != 0:
        row["stderr"] = got.get("stderr", "")
    return row


def scenario(name: str, flags: list[str], n: int, conc: int, sdk_interval: str, mean_latency: float | None,
             tmp: Path) -> dict[str, Any]:
    """The three clients in turn on one emulator. Its ready→fetch figures are cumulative, so each
    client gets its own emulator for the delay only where latency matters (a fresh one per client)."""
    rows: dict[str, Any] = {}
    for peer in ("batchgen", "sdk", "plain"):
        sb = SandboxProcess(flags) if mean_latency else shared
        try:
            out = tmp / f"{name}-{peer}"
            out.mkdir(parents=True, exist_ok=True)
            s0 = sb.stats()
            if peer == "batchgen":
                manifest = tmp / f"{name}.yaml"
                write_manifest(manifest, n, name)
                got = run_worker(manifest, out, sb.url, conc, [])
            elif peer == "sdk":
                got = child(SDK, [sb.url, str(n), str(conc), sdk_interval, str(out)])
            else:
                got = child(PLAIN, [sb.url, str(n), str(conc), str(out)])
            s1 = sb.stats()
        finally:
            if mean_latency:
                sb.close()
        rows[peer] = figures(got, s0, s1, n, mean_latency)
    return rows


def markdown(results: dict[str, dict[str, Any]]) -> str:
    out = ["| scenario | client | CPU ms / image | requests / image | polls / image | wall s | median ready→fetch, % of mean | "
           "batchgen's CPU ratio | batchgen's wall ratio |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in results.items():
        b = rows["batchgen"]
        for peer, r in rows.items():
            cpu = "" if peer == "batchgen" else f"{b['cpu_ms_per_image'] / r['cpu_ms_per_image']:.2f}×"
            wall = "" if peer == "batchgen" else f"{b['wall_s'] / r['wall_s']:.2f}×"
            out.append(f"| {name} | {peer} | {r['cpu_ms_per_image']} | {r['requests_per_image']} | {r['polls_per_image']} | "
                       f"{r['wall_s']} | {r.get('ready_to_fetch_median_pct', '')} | {cpu} | {wall} |")
    return "\n".join(out)


shared: SandboxProcess


def main() -> int:
    global shared
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "peers.json")
    args = ap.parse_args()
    zero_n, real_n = (40, 20) if args.smoke else (2000, 300)
    precompile(None)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="batchgen-peers-") as tmp:
        zero = ["--latency", "0", "--latency-sigma", "0"]
        shared = SandboxProcess(zero)
        try:
            results["zero latency"] = scenario("zero", zero, zero_n, 256, "default", None, Path(tmp))
        finally:
            shared.close()
        results["latency x0.1"] = scenario("real", ["--latency", "21.6", "--time-scale", "0.1"], real_n, 300, "0.1",
                                           2.16, Path(tmp))
    table = markdown(results)
    args.json.write_text(json.dumps({"rows": results, "table": table}, indent=2))
    print(table)
    failed = [f"{s}/{p}" for s, rows in results.items() for p, r in rows.items() if r["exit_code"] != 0]
    if failed:
        print("non-zero exits:", failed, json.dumps(results, indent=1)[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
