#!/usr/bin/env python3
"""Wall time of one batch with one key and with a pool of keys, each held to the emulator's per-key limit.

The tests count rate-limit windows (tests/e2e/test_key_pool.py); this measures what that buys in
time. The emulator runs in this process with a scaled minute, so a limit of 5 RPM per key is 5
submits per ``60 * time_scale`` seconds.

    python benchmarks/key_pool.py                     # 60 items, 5 RPM per key, 1 and 2 keys
    python benchmarks/key_pool.py --items 120 --keys 1,2,4

Measured (2-core machine, 60 items, 5 RPM per key, a 1.2 s minute): 1 key 14.6 s in 12 windows,
2 keys 8.0 s in 6 windows each (1.8x), 4 keys 4.3 s in 3 each (3.4x). Short of 2x and 4x by the
last, partly filled window and the jitter added to each 429's reset.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchgen.app.runner import RunOptions, execute  # noqa: E402
from batchgen.sandbox import Sandbox  # noqa: E402
from tests.support.cli import write_manifest  # noqa: E402


async def one(n_keys: int, items: int, rpm: int, time_scale: float, folder: Path) -> tuple[float, int]:
    async with Sandbox(rpm=rpm, time_scale=time_scale, latency=5.0, latency_sigma=0.3) as sb:
        keys = [f"SG_bench_key_{i}_0123456789" for i in range(n_keys)]
        os.environ.pop("SEGMIND_API_KEY", None)
        os.environ["SEGMIND_API_KEYS"] = ",".join(keys)
        manifest = write_manifest(folder / f"m{n_keys}.yaml", items, prefix=f"k{n_keys}")
        started = time.monotonic()
        outcome = await execute(RunOptions(manifest=manifest, out=folder / f"out{n_keys}", base_url=sb.url),
                                lambda _line: None)
        took = time.monotonic() - started
        assert outcome.exit_code == 0, outcome
        return took, max(sb.state.limiter.windows[k] for k in keys)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--rpm", type=int, default=5, help="the emulator's limit per key")
    ap.add_argument("--time-scale", type=float, default=0.02, help="a minute lasts 60 x this many seconds")
    ap.add_argument("--keys", default="1,2", help="pool sizes to compare")
    args = ap.parse_args()
    print(f"{args.items} items, {args.rpm} RPM per key, a minute of {60 * args.time_scale:g} s")
    print("keys  wall s  windows/key  speed-up")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(k) for k in args.keys.split(",")):
            took, windows = await one(n, args.items, args.rpm, args.time_scale, Path(tmp))
            base = base or took
            print(f"{n:>4}  {took:6.2f}  {windows:>11}  {base / took:7.2f}x")


if __name__ == "__main__":
    anyio.run(main)
