#!/usr/bin/env python3
"""Scale-out (issue 12, point 6): a batch to S3 (moto's server) with 4 local shards and 2 keys, against one local process.

Everything runs on this machine as separate processes: the emulator (``batchgen sandbox``, fast jobs,
no rate limit), moto's S3 server (with a request counter in front), and the workers. Measured per
setup: images/s (wall), CPU per image (user + system of the workers, from ``wait4``), requests per
image (to the service, and to S3), and peak RSS per worker.

    python benchmarks/objstore.py --items 2000
    python benchmarks/objstore.py --items 20000 --concurrency 64 --json out.json

The emulator and moto share the machine's cores with the workers, so images/s is a floor; CPU per
image and requests per image are the workers' own.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cli import write_manifest  # noqa: E402

KEYS = "SG_bench_key_a_0123456789,SG_bench_key_b_0123456789"
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}

MOTO = r"""
import json, sys
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
count = [0]
app = DomainDispatcherApplication(create_backend_app)
def counted(environ, start_response):
    if environ.get("PATH_INFO") == "/_count":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(count[0]).encode()]
    count[0] += 1
    return app(environ, start_response)
srv = make_server("127.0.0.1", 0, counted, threaded=True, request_handler=MotoRequestHandler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@dataclass
class Row:
    setup: str
    items: int
    wall_s: float
    images_per_s: float
    cpu_ms_per_image: float
    api_requests_per_image: float
    s3_requests_per_image: float
    peak_rss_mb_per_worker: float
    exit_codes: list[int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _wait_up(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _sandbox() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "batchgen", "sandbox", "--port", str(port), "--latency", "0.2",
                             "--latency-sigma", "0.2", "--credits", "1000000000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait_up(url + "/_sandbox/stats")
    return proc, url


def _moto() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-c", MOTO], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def _workers(argvs: list[list[str]], env: dict[str, str]) -> tuple[float, float, float, list[int]]:
    """Start every worker at once; wall time, total CPU seconds, the largest peak RSS (MB), exit codes."""
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "batchgen", *argv], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for argv in argvs]
    cpu, rss, codes = 0.0, 0.0, []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        codes.append(p.returncode)
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss / 1024)  # KiB on Linux
    return time.monotonic() - started, cpu, rss, codes


def measure(items: int, shards: int, concurrency: int, folder: Path) -> list[Row]:
    manifest = write_manifest(folder / "bench.yaml", items, prefix="p6")
    rows: list[Row] = []
    sb, sb_url = _sandbox()
    moto, endpoint = _moto()
    try:
        env = {**os.environ, **AWS, "AWS_ENDPOINT_URL": endpoint, "SEGMIND_API_KEYS": KEYS}
        env.pop("SEGMIND_API_KEY", None)
        import s3fs

        os.environ.update({**AWS, "AWS_ENDPOINT_URL": endpoint})
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bench")

        def one(setup: str, argvs: list[list[str]], s3: bool) -> None:
            api0 = int(_get(sb_url + "/_sandbox/stats")["requests_total"])  # type: ignore[index]
            s30 = int(_get(endpoint + "/_count"))  # type: ignore[arg-type]
            wall, cpu, rss, codes = _workers(argvs, env)
            api = int(_get(sb_url + "/_sandbox/stats")["requests_total"]) - api0  # type: ignore[index]
            s3n = int(_get(endpoint + "/_count")) - s30 if s3 else 0  # type: ignore[arg-type]
            rows.append(Row(setup, items, round(wall, 2), round(items / wall, 1), round(cpu / items * 1000, 2),
                            round(api / items, 2), round(s3n / items, 2), round(rss, 1), codes))
            print(json.dumps(asdict(rows[-1])), flush=True)

        common = ["--base-url", sb_url, "--no-progress", "--concurrency", str(concurrency), "--rpm-scope", "submit"]
        one("1 local process, 2 keys", [["run", str(manifest), "--out", str(folder / "local"), *common]], False)
        one(f"{shards} shards to S3, 2 keys", [
            ["run", str(manifest), "--out", "s3://bench/p6", "--cache-dir", str(folder / "cache"), *common,
             "--shard-count", str(shards), "--shard-index", str(i)] for i in range(shards)], True)
    finally:
        for p in (sb, moto):
            p.terminate()
            p.wait(timeout=10)
    return rows


def table(rows: list[Row]) -> str:
    head = ("| setup | items | wall s | images/s | CPU ms/image | API requests/image | S3 requests/image "
            "| peak RSS MB per worker |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    return "\n".join([head] + [
        f"| {r.setup} | {r.items} | {r.wall_s} | {r.images_per_s} | {r.cpu_ms_per_image} | "
        f"{r.api_requests_per_image} | {r.s3_requests_per_image} | {r.peak_rss_mb_per_worker} |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64, help="per worker process")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.items, args.shards, args.concurrency, Path(tmp))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
