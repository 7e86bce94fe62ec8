#!/usr/bin/env python3
"""P4 in detail: planning and resuming large manifests, CPU time and peak memory of each step.

Two sizes. A 100,000-item YAML manifest: ``batchgen plan`` on a fresh folder, and the resume of a
finished run (its 400,000-line ledger replayed, every image checked, nothing sent). A 1,000,000-row
JSONL prompts file: ``batchgen plan`` on a fresh folder, and the replay of a finished 1,000,000-item
ledger (4,000,000 lines). The finished runs are synthetic: every item's ``intent``, ``submitted``,
``completed`` and ``downloaded`` lines written with the shapes a real run writes (and, for the YAML
run, a small image file per item), so a million jobs need not be run to measure their resume.

Each step is a child process; CPU time (user + system) and peak RSS come from the kernel
(``os.wait4``), so a busy machine stretches the wall time but hardly these. Best of ``--repeat``.
(A child's peak RSS counts this process's pages at the spawn: the data is written as it is made,
so this process stays well under the smallest figure measured.)

    python benchmarks/p4.py                          # both sizes, this checkout
    python benchmarks/p4.py --sizes yaml --repeat 1
    python benchmarks/p4.py --beside /path/to/older/checkout   # the same steps on another tree, interleaved
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))

from batchgen.core.fastjson import params_sha  # noqa: E402  (the benchmark runs from a checkout)
from batchgen.manifest.ids import derive_id  # noqa: E402
from batchgen.store.shards import image_bucket  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trees import precompile  # noqa: E402  (beside this script)

TS = "2026-01-01T00:00:00.000Z"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(56)  # any bytes do: the resume checks size and (if touched) sha256
PNG_SHA = hashlib.sha256(PNG).hexdigest()


def yaml_params(i: int) -> dict[str, Any]:
    return {"prompt": f"P4 benchmark prompt number {i}", "seed": 100 + i}


def write_yaml_manifest(path: Path, n: int) -> None:
    """The manifest run.py's P4 writes (item ``i`` has the id ``i%06d``)."""
    with open(path, "w") as f:
        f.write("name: bench\nmodel: ideogram-txt-2-img\nitems:\n")
        for i in range(n):
            f.write(f'  - {{id: "i{i:06d}", prompt: "P4 benchmark prompt number {i}", seed: {100 + i}}}\n')


def row_params(i: int) -> dict[str, Any]:
    return {"prompt": f"a photo of object {i} on a plain table, studio light", "seed": 100 + i % 999_000}


def write_jsonl_manifest(folder: Path, n: int) -> Path:
    """A manifest naming a JSONL prompts file of ``n`` rows, ids derived from content (no ``id``)."""
    with open(folder / "prompts.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps(row_params(i)) + "\n")
    manifest = folder / "rows.yaml"
    manifest.write_text("name: rows\nmodel: ideogram-txt-2-img\nprompts_file: prompts.jsonl\n")
    return manifest


def write_finished_ledger(
    out: Path, count: int, items: Iterable[tuple[str, dict[str, Any]]], *, files: bool
) -> None:
    """The ledger of a run that finished every item, line for line as a real run writes it.

    ``items`` is consumed as it is written: this process must stay small, because the kernel counts
    a child's peak RSS from the moment it is spawned, the parent's pages included."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(out / "ledger.jsonl", "w") as f:
        w = f.write
        w(json.dumps({"ts": TS, "item": None, "event": "run_start", "pid": 1, "items": count,
                      "pending": count}, separators=(",", ":")) + "\n")
        for n, (item, params) in enumerate(items):
            rid = f"{n:08x}-0000-4000-8000-{n:012x}"
            sha = params_sha(params)
            for ev in (
                {"ts": TS, "item": item, "event": "intent", "params_sha": sha, "attempt": 1, "params": params,
                 "key_fp": "f79935785a7e"},
                {"ts": TS, "item": item, "event": "submitted", "request_id": rid, "key_fp": "f79935785a7e"},
                {"ts": TS, "item": item, "event": "completed", "request_id": rid,
                 "output_url": f"http://127.0.0.1:1/files/{rid}.png", "cost_usd": 0.1,
                 "inference_time": 0.7254, "latency_s": 1.003, "ready_s": 0.8535},
                {"ts": "2099-01-01T00:00:00.000Z", "item": item, "event": "downloaded", "request_id": rid,
                 "file": f"images/{image_bucket(item)}/{item}.png", "sha256": PNG_SHA, "bytes": len(PNG),
                 "width": 1024, "height": 1024},
            ):
                w(json.dumps(ev, separators=(",", ":"), ensure_ascii=False) + "\n")
            if files:
                folder = images / image_bucket(item)
                folder.mkdir(exist_ok=True)
                (folder / f"{item}.png").write_bytes(PNG)
        w(json.dumps({"ts": TS, "item": None, "event": "run_end", "exit_code": 0, "counts": {},
                      "spent_usd": 0.1 * count}, separators=(",", ":")) + "\n")


REPLAY = "import sys; from pathlib import Path; from batchgen.store.ledger import replay; " \
         "s = replay(Path(sys.argv[1])); print(len(s.items), s.lines)"


def measured(argv: list[str], tree: Path | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    e = dict(os.environ, **(env or {}))
    if tree is not None:
        e["PYTHONPATH"] = str(tree)
    t0 = time.monotonic()
    proc = subprocess.Popen([PY, *argv], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tree or ROOT)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "peak_mb": round(ru.ru_maxrss / 1024, 1),
        "stdout": out[-400:],
        "stderr": err[-400:],
    }


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the least CPU time, and the least peak RSS of all (the machine is shared)."""
    ok = [r for r in runs if r["exit"] == 0] or runs
    top = min(ok, key=lambda r: r["cpu_s"])
    return {**top, "peak_mb": min(r["peak_mb"] for r in ok), "runs": len(runs)}


Step = tuple[str, list[str], dict[str, str]]


def yaml_steps(data: Path, n: int) -> list[Step]:
    """The 100k-item YAML manifest: plan on a fresh and on a finished folder, replay, resume."""
    manifest = data / "p4.yaml"
    write_yaml_manifest(manifest, n)
    done = data / "p4-done"
    if not (done / "ledger.jsonl").exists():
        write_finished_ledger(done, n, ((f"i{i:06d}", yaml_params(i)) for i in range(n)), files=True)
    return [
        ("yaml plan (fresh folder)", ["-m", "batchgen", "plan", str(manifest), "--out", str(data / "p4-fresh")], {}),
        ("yaml plan (finished folder)", ["-m", "batchgen", "plan", str(manifest), "--out", str(done)], {}),
        ("yaml ledger replay", ["-c", REPLAY, str(done / "ledger.jsonl")], {}),
        # Nothing is left to do, so nothing may be sent: an unroutable base URL would show it.
        ("yaml resume (finished folder)", ["-m", "batchgen", "run", str(manifest), "--out", str(done),
                                           "--base-url", "http://127.0.0.1:9", "--no-progress"],
         {"SEGMIND_API_KEY": "bench-key"}),
    ]


def jsonl_steps(data: Path, n: int) -> list[Step]:
    """The 1M-row JSONL prompts file: plan on a fresh folder; replay of a finished 1M-item ledger."""
    big = data / "rows"
    big.mkdir(parents=True, exist_ok=True)
    manifest = write_jsonl_manifest(big, n)
    done = data / "rows-done"
    if not (done / "ledger.jsonl").exists():
        write_finished_ledger(done, n, ((derive_id(row_params(i)), row_params(i)) for i in range(n)), files=False)
    return [
        ("jsonl plan (fresh folder)", ["-m", "batchgen", "plan", str(manifest), "--out", str(data / "rows-fresh")], {}),
        ("jsonl ledger replay", ["-c", REPLAY, str(done / "ledger.jsonl")], {}),
    ]


def plan_figures(manifest: Path, out: Path, tree: Path | None) -> dict[str, Any]:
    """``batchgen plan`` of ``manifest`` into a fresh folder: wall, CPU, peak RSS (run.py's P4)."""
    plan = measured(["-m", "batchgen", "plan", str(manifest), "--out", str(out)], tree, {"SEGMIND_API_KEY": ""})
    return {"plan_s": plan["wall_s"], "plan_cpu_s": plan["cpu_s"], "plan_peak_rss_mb": plan["peak_mb"],
            "plan_exit_code": plan["exit"]}


def rows_figures(data: Path, n: int, tree: Path | None) -> dict[str, Any]:
    """run.py's P4m: plan of an ``n``-row JSONL prompts file, replay of its finished ledger (once each)."""
    steps = {name: (argv, env) for name, argv, env in jsonl_steps(data, n)}
    (plan_argv, plan_env), (replay_argv, replay_env) = steps["jsonl plan (fresh folder)"], steps["jsonl ledger replay"]
    plan = measured(plan_argv, tree, plan_env)
    replay = measured(replay_argv, tree, replay_env)
    row: dict[str, Any] = {
        "exit_code": plan["exit"] or replay["exit"],
        "plan_s": plan["wall_s"], "plan_cpu_s": plan["cpu_s"], "plan_peak_rss_mb": plan["peak_mb"],
        "replay_s": replay["wall_s"], "replay_cpu_s": replay["cpu_s"], "replay_peak_rss_mb": replay["peak_mb"],
    }
    if row["exit_code"]:
        row["worker_stderr"] = (plan["stderr"] + replay["stderr"])[-400:]
    return row


def run_steps(steps: list[Step], trees: list[tuple[str, Path | None]], repeat: int) -> list[dict[str, Any]]:
    """Each step for each tree, the trees taking turns within each repeat; best of ``repeat``."""
    rows = []
    for name, argv, env in steps:
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
        for _ in range(repeat):
            for label, tree in trees:
                runs[label].append(measured(argv, tree, env))
        for label, _ in trees:
            row = {"step": name, "tree": label, **best(runs[label])}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "stdout"}), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="yaml,jsonl", help="yaml (100k items), jsonl (1M rows), or both")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--beside", type=Path, action="append", default=[], help="another checkout to measure alike")
    ap.add_argument("--data", type=Path, help="keep the generated files here (default: a temporary folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sizes = set(args.sizes.split(","))
    trees: list[tuple[str, Path | None]] = [("this", None)] + [(str(p), p.resolve()) for p in args.beside]
    precompile(*(tree for _, tree in trees))
    with tempfile.TemporaryDirectory(prefix="batchgen-p4-") as tmp:
        data = args.data or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        steps = (yaml_steps(data, args.items) if "yaml" in sizes else []) + (
            jsonl_steps(data, args.rows) if "jsonl" in sizes else [])
        rows = run_steps(steps, trees, args.repeat)
    print("\n| step | tree | exit | CPU s | wall s | peak RSS MB |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['step']} | {r['tree']} | {r['exit']} | {r['cpu_s']} | {r['wall_s']} | {r['peak_mb']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(r["exit"] != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
