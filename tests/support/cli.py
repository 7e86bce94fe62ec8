"""Helpers for the end-to-end tests: the worker runs as a real subprocess against a loopback sandbox.

The sandbox lives in the test's event loop, so every wait on the worker must be asynchronous
(``run_cli`` / ``start_cli``); a blocking ``subprocess.run`` would stop the sandbox from answering.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import Process

from batchgen.store import ledger as L
from batchgen.store.shards import ImageLayout, image_folder
from tests.support.images import png_size

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "demo.yaml"
KEY = "SG_secret_1234567890abcdef"
SMALL_RES = "RESOLUTION_640_1024"


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw_out: bytes = b""
    raw_err: bytes = b""


# Variables a scheduler sets that change what a worker does: never inherited from the test's own environment.
SCHEDULER_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


def worker_env(key: str | None = KEY, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: this one without a key, debug or scheduler variables, then ``extra``."""
    dropped = ("SEGMIND_API_KEY", "SEGMIND_API_KEYS", "SEGMIND_API_KEYS_FILE", "BATCHGEN_DEBUG", *SCHEDULER_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    if key is not None:
        env["SEGMIND_API_KEY"] = key
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli(*args: Any) -> list[str]:
    return [sys.executable, "-m", "batchgen", *(str(a) for a in args)]


async def run_cli(*args: Any, key: str | None = KEY, within: float = 60.0, env: dict[str, str] | None = None) -> Result:
    """Run ``batchgen ARGS`` to its end without blocking the event loop (the sandbox keeps serving).
    ``env``: variables added to the worker's environment (``worker_env``)."""
    with anyio.fail_after(within):
        cp = await anyio.run_process(cli(*args), cwd=REPO, env=worker_env(key, env), check=False)
    return Result(cp.returncode, cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace"),
                  cp.stdout, cp.stderr)


class Worker:
    """A ``batchgen run`` in the background; its output goes to files so no pipe can fill up."""

    def __init__(self, proc: Process, out_path: Path, err_path: Path) -> None:
        self.proc = proc
        self.out_path = out_path
        self.err_path = err_path

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self, within: float = 60.0) -> Result:
        with anyio.fail_after(within):
            code = await self.proc.wait()
        out, err = self.out_path.read_bytes(), self.err_path.read_bytes()
        return Result(code, out.decode(errors="replace"), err.decode(errors="replace"), out, err)


# ---- files -----------------------------------------------------------------------------------


def write_manifest(path: Path, n: int, *, prefix: str = "img", resolution: str = SMALL_RES,
                   limits: str = "", extra: str = "") -> Path:
    """A manifest of ``n`` items whose bodies all differ (distinct prompt and seed)."""
    lines = ["model: ideogram-txt-2-img", "defaults:", f"  resolution: {resolution}", "  style_type: GENERAL"]
    if extra:
        lines.append(extra.rstrip("\n"))
    lines.append("items:")
    for i in range(n):
        lines += [f"  - id: {prefix}-{i:03d}", f'    prompt: "Test picture number {i} of {prefix}"',
                  f"    seed: {1000 + i}"]
    if limits:
        lines.append("limits:")
        lines += [f"  {x}" for x in limits.strip().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


def resolution_size(res: str) -> tuple[int, int]:
    _, w, h = res.split("_")
    return int(w), int(h)


def ledger_events(out: Path) -> list[dict[str, Any]]:
    """Every complete line of the ledger (a torn last line, from a kill, is left out)."""
    path = out / "ledger.jsonl"
    if not path.exists():
        return []
    events = []
    for raw in path.read_bytes().splitlines(keepends=True):
        if raw.endswith(b"\n"):
            events.append(json.loads(raw))
    return events


def ledger_lines(out: Path) -> int:
    try:
        return (out / "ledger.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def count_events(out: Path, event: str) -> int:
    return sum(1 for ev in ledger_events(out) if ev.get("event") == event)


async def wait_for(predicate: Any, within: float = 30.0, what: str = "condition") -> None:
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - a file written by another process
            await anyio.sleep(0.02)


def assert_all_downloaded(out: Path, item_ids: list[str], sizes: dict[str, tuple[int, int]] | None = None) -> None:
    """The ledger replays to every item downloaded, and each file is a valid PNG (of the right size)."""
    state = L.replay(out / "ledger.jsonl")
    assert not state.torn_tail
    for item in item_ids:
        st = state.items.get(item)
        assert st is not None and st.state == L.DOWNLOADED, f"{item}: {st}"
        assert st.file == image_path(item)
        size = png_size(out / st.file)
        if sizes is not None:
            assert size == sizes[item], f"{item}: {size} != {sizes[item]}"
    assert image_files(out) == sorted(image_path(i) for i in item_ids), "stray or missing files under images/"


def image_path(item: str, ext: str = "png", layout: ImageLayout = ImageLayout.FLAT) -> str:
    """Where a run stores an item's image, relative to the output folder. The command line's
    manifests in the tests are small, so ``--image-layout auto`` keeps them flat."""
    return f"{image_folder(Path('images'), item, layout).as_posix()}/{item}.{ext}"


def image_files(out: Path) -> list[str]:
    """Every file under ``images/``, at any depth, relative to the output folder."""
    return sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if not p.is_dir())


def manifest_ids(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(n)]


@pytest.fixture
async def start_cli(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """``worker = await start_cli(*args, env={...})``; every worker still alive at the end is SIGKILLed."""
    workers: list[Worker] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    async def start(*args: Any, key: str | None = KEY, env: dict[str, str] | None = None) -> Worker:
        n = len(workers)
        out_path, err_path = logs / f"{n}.out", logs / f"{n}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:  # noqa: ASYNC230 - handed to the child
            proc = await anyio.open_process(cli(*args), cwd=REPO, env=worker_env(key, env),
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        w = Worker(proc, out_path, err_path)
        workers.append(w)
        return w

    try:
        yield start
    finally:
        for w in workers:
            if w.proc.returncode is None:
                w.proc.send_signal(signal.SIGKILL)
            with anyio.move_on_after(10):
                await w.proc.wait()
            await w.proc.aclose()
