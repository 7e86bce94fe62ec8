"""Refusals before any work: bad manifests (exit 2), a refused key and a held output folder (exit 3)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.cli import count_events, ledger_lines, run_cli, wait_for, write_manifest

HEAD = 'model: ideogram-txt-2-img\nitems:\n  - id: fine\n    prompt: "A fine item"\n  - id: broken\n'

# (item body, line the message must name, field path it must name)
BROKEN = {
    "missing prompt": ('    negative_prompt: "blurry"\n', 5, "items[1].prompt"),
    "empty prompt": ('    prompt: ""\n', 6, "items[1].prompt"),
    "bad magic_prompt_option": ('    prompt: "kite"\n    magic_prompt_option: MAYBE\n', 7, "items[1].magic_prompt_option"),
    "bad resolution": ('    prompt: "kite"\n    resolution: RESOLUTION_1000_1000\n', 7, "items[1].resolution"),
    "bad style_type": ('    prompt: "kite"\n    style_type: CUBIST\n', 7, "items[1].style_type"),
    "seed too low": ('    prompt: "kite"\n    seed: 99\n', 7, "items[1].seed"),
    "seed too high": ('    prompt: "kite"\n    seed: 1000000\n', 7, "items[1].seed"),
    "seed not an integer": ('    prompt: "kite"\n    seed: 12.5\n', 7, "items[1].seed"),
    "bad palette preset": ('    prompt: "kite"\n    color_palette: {name: NEON}\n', 7, "items[1].color_palette.name"),
    "bad palette hex": (
        '    prompt: "kite"\n    color_palette:\n      members:\n        - {color_hex: "#12345G", color_weight: 0.5}\n',
        9,
        "items[1].color_palette.members[0].color_hex",
    ),
    "palette weight out of range": (
        '    prompt: "kite"\n    color_palette:\n      members:\n        - {color_hex: "#123456", color_weight: 1.5}\n',
        9,
        "items[1].color_palette.members[0].color_weight",
    ),
    "unknown parameter": ('    prompt: "kite"\n    sampler: euler\n', 7, "items[1].sampler"),
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_broken_parameter_rule_exits_2_before_any_request(case: str, tmp_path: Path, sandbox_factory) -> None:
    body, line, field = BROKEN[case]
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(HEAD + body)
    sb = await sandbox_factory(latency=0.1, latency_sigma=0.2)
    out = tmp_path / "out"
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", within=30)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert f"{manifest}:{line}: {field}:" in lines[0]
    assert "Traceback" not in r.err
    assert sb.stats()["requests_total"] == 0
    assert not (out / "ledger.jsonl").exists()


async def test_refused_key_exits_3_with_one_line(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.1, api_key="right", latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 3)
    r = await run_cli("run", manifest, "--base-url", sb.url, "--out", tmp_path / "out", "--no-progress",
                      key="wrong", within=20)
    assert r.code == 3, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "401" in lines[0] and "SEGMIND_API_KEY" in lines[0]
    assert "Traceback" not in r.err + r.out
    s = sb.stats()
    assert s["submits_accepted"] == 0


async def test_second_run_on_a_held_folder_is_refused(tmp_path: Path, sandbox_factory, start_cli) -> None:
    # Jobs that take a minute: the first run submits everything, then only polls (writes nothing).
    sb = await sandbox_factory(latency=60.0, latency_sigma=0.0)
    manifest = write_manifest(tmp_path / "m.yaml", 4)
    out = tmp_path / "out"
    first = await start_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    await wait_for(lambda: count_events(out, "submitted") == 4, within=30)
    before = (out / "ledger.jsonl").read_bytes()

    second = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", within=30)
    assert second.code == 3, (second.out, second.err)
    assert "another batchgen run" in second.err
    assert len(second.err.strip().splitlines()) == 1
    assert (out / "ledger.jsonl").read_bytes() == before
    assert sb.stats()["submits_accepted"] == 4

    first.signal(signal.SIGINT)
    done = await first.wait(within=20)
    assert done.code == 130
    assert ledger_lines(out) > before.count(b"\n")  # the first run recorded its own end


async def test_sandbox_and_base_url_together_are_refused(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(latency=0.05, latency_sigma=0.2)
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    r = await run_cli("run", manifest, "--sandbox", "--base-url", sb.url, "--out", tmp_path / "out", "--no-progress")
    assert r.code == 2
    assert "--sandbox and --base-url" in r.err and len(r.err.strip().splitlines()) == 1
    assert sb.stats()["requests_total"] == 0
    assert not (tmp_path / "out").exists()
