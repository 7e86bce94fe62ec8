"""``batchgen reconcile`` against the sandbox: the folder's bill equals what the emulator charged,
lost answers show up as requests the ledger lacks and as items paid twice, ``--adopt`` makes the
next run download instead of paying again, and a host without a history ends with one line."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from batchgen.api.outcomes import Secret
from batchgen.store.lock import output_lock
from tests.support.cli import (
    assert_all_downloaded,
    image_path,
    ledger_events,
    manifest_ids,
    run_cli,
    write_manifest,
)


async def reconcile(out: Path, url: str, *extra: Any) -> tuple[int, dict[str, Any], str]:
    r = await run_cli("reconcile", out, "--base-url", url, "--json", *extra, within=60)
    assert "Traceback" not in r.err, r.err
    return r.code, (json.loads(r.out) if r.out.strip() else {}), r.err


async def test_a_clean_run_matches_what_the_sandbox_charged(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 6)
    out = tmp_path / "out"
    ran = await run_cli("run", manifest, "--base-url", sb.url, "--history-url", sb.url, "--out", out, "--no-progress")
    assert ran.code == 0, ran.err

    code, report, _ = await reconcile(out, sb.url)
    charged = sb.stats()["charged_usd"]
    assert code == 0, report
    assert report["billed_usd"] == pytest.approx(charged) == pytest.approx(0.6)
    assert report["ledger_usd"] == pytest.approx(charged) and report["requests_billed"] == 6
    assert report["not_in_ledger"] == report["not_billed"] == report["duplicates_paid"] == []

    text = await run_cli("reconcile", out, "--history-url", sb.url)  # the history host alone is enough
    assert text.code == 0, text.err
    assert "billed (history)" in text.out and "all matches" in text.out.splitlines()[-1]


async def test_the_history_in_its_other_forms_gives_the_same_bill(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(history_outputs=3, history_body="string", history_dates="http")
    manifest = write_manifest(tmp_path / "m.yaml", 5)
    out = tmp_path / "out"
    assert (await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")).code == 0
    code, report, _ = await reconcile(out, sb.url)
    assert code == 0, report
    assert report["billed_usd"] == pytest.approx(sb.stats()["charged_usd"]) and report["requests_billed"] == 5


async def test_lost_answers_are_found_and_adopted(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(faults="lost=0.3", fault_seed=11)
    blind = await sandbox_factory(history=False)  # the run asks no history: it pays again for lost answers
    manifest = write_manifest(tmp_path / "m.yaml", 12)
    out = tmp_path / "out"
    ran = await run_cli("run", manifest, "--base-url", sb.url, "--history-url", blind.url, "--out", out,
                        "--no-progress", within=90)
    assert ran.code == 0, ran.err
    stats = sb.stats()
    assert stats["lost_submit_answers"] >= 2, stats  # the seed must make the point

    # What the emulator knows: every accepted request, by the item whose prompt it carried.
    item_of = {ev["params"]["prompt"]: ev["item"] for ev in ledger_events(out) if ev["event"] == "intent"}
    sent: dict[str, set[str]] = defaultdict(set)
    for req in sb.requests():
        sent[item_of[req["prompt"]]].add(req["request_id"])
    known = {ev["request_id"] for ev in ledger_events(out) if ev["event"] == "submitted"}

    code, report, _ = await reconcile(out, sb.url)
    assert code == 1
    assert report["billed_usd"] == pytest.approx(stats["charged_usd"])
    assert report["requests_billed"] == stats["submits_accepted"]
    assert {(e["item"], e["request_id"]) for e in report["not_in_ledger"]} == {
        (item, rid) for item, rids in sent.items() for rid in rids - known
    }
    assert len(report["not_in_ledger"]) == stats["lost_submit_answers"]
    assert {d["item"]: set(d["request_ids"]) for d in report["duplicates_paid"]} == {
        item: rids for item, rids in sent.items() if len(rids) > 1
    }

    adopted = await run_cli("reconcile", out, "--base-url", sb.url, "--adopt")
    assert adopted.code == 1 and f"recorded {stats['lost_submit_answers']} request(s)" in adopted.out
    code, after, _ = await reconcile(out, sb.url)
    assert after["not_in_ledger"] == [] and after["ledger_usd"] == pytest.approx(after["billed_usd"])
    assert after["duplicates_paid"] == report["duplicates_paid"] and code == 1  # paid twice stays a fact

    again = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    assert again.code == 0, again.err
    assert sb.stats()["submits_accepted"] == stats["submits_accepted"]
    assert_all_downloaded(out, manifest_ids(12))


async def test_an_intent_whose_answer_was_lost_is_adopted_and_downloaded_without_paying(
    tmp_path: Path, sandbox_factory
) -> None:
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 4)
    out = tmp_path / "out"
    assert (await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")).code == 0

    # As if the process had died right after the POST: the item's lines after its intent are gone.
    lost = "img-002"
    lines = (out / "ledger.jsonl").read_text().splitlines(keepends=True)
    rid = next(json.loads(x)["request_id"] for x in lines if '"submitted"' in x and f'"{lost}"' in x)
    kept = [x for x in lines if f'"{lost}"' not in x or '"intent"' in x]
    (out / "ledger.jsonl").write_text("".join(kept))
    (out / image_path(lost)).unlink()
    accepted = sb.stats()["submits_accepted"]

    code, report, _ = await reconcile(out, sb.url)
    assert code == 1
    assert [(e["request_id"], e["item"]) for e in report["not_in_ledger"]] == [(rid, lost)]
    assert report["billed_usd"] == pytest.approx(sb.stats()["charged_usd"])

    code, report, _ = await reconcile(out, sb.url, "--adopt")
    assert code == 1 and report["adopted"] == 1
    last = ledger_events(out)[-1]
    assert (last["event"], last["item"], last["request_id"], last["how"]) == ("recovered", lost, rid, "history-body-match")
    assert last["output_url"].startswith(sb.url) and last["cost_usd"] == pytest.approx(0.1)

    again = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")
    assert again.code == 0, again.err
    assert sb.stats()["submits_accepted"] == accepted  # downloaded, not paid again
    assert_all_downloaded(out, manifest_ids(4))
    code, report, _ = await reconcile(out, sb.url)
    assert code == 0, report


async def test_without_a_history_one_line_and_exit_3(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory(history=False)
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    out = tmp_path / "out"
    assert (await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")).code == 0
    for extra in ((), ("--json",), ("--adopt",)):
        r = await run_cli("reconcile", out, "--base-url", sb.url, *extra)
        assert r.code == 3, (r.out, r.err)
        assert r.out == "" and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        assert "request history is unavailable" in r.err
    assert ledger_events(out)[-1]["event"] == "run_end"  # --adopt wrote nothing

    # --history-url points elsewhere: the run's server with a history, not the one without.
    other = await sandbox_factory()
    r = await run_cli("reconcile", out, "--base-url", other.url, "--history-url", sb.url)
    assert r.code == 3 and "unavailable" in r.err


async def test_adopt_waits_for_no_run_and_bad_input_is_exit_2(tmp_path: Path, sandbox_factory) -> None:
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 2)
    out = tmp_path / "out"
    assert (await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress")).code == 0
    asked = sb.stats()["history_requests"]
    with output_lock(out):
        held = await run_cli("reconcile", out, "--base-url", sb.url, "--adopt")
    assert held.code == 3 and "another batchgen run" in held.err
    assert sb.stats()["history_requests"] == asked  # refused before asking anything

    assert (await run_cli("reconcile", tmp_path / "nothing", "--base-url", sb.url)).code == 2
    assert (await run_cli("reconcile", out, "--base-url", sb.url, key=None)).code == 2
    assert (await run_cli("reconcile", out, "--history-url", "ftp://x")).code == 2
    refused = await run_cli("run", manifest, "--sandbox", "--history-url", sb.url, "--out", out)
    assert refused.code == 2 and "--history-url" in refused.err


async def test_history_faults_are_waited_out(tmp_path: Path, sandbox_factory) -> None:
    """429s (with the reset header) and 5xx answers of the history itself change nothing in the bill."""
    sb = await sandbox_factory(time_scale=0.1)
    manifest = write_manifest(tmp_path / "m.yaml", 6)
    out = tmp_path / "out"
    ran = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", within=90)
    assert ran.code == 0, ran.err
    # Faults for the reconcile alone, from a known seed: its first history call draws a 429.
    sb.set_faults("429=0.3,500=0.15,502=0.1", seed=1)
    before = sb.stats()
    code, report, _ = await reconcile(out, sb.url)
    after = sb.stats()
    assert code == 0, report
    assert report["billed_usd"] == pytest.approx(after["charged_usd"])
    faulted = sum(after["faults_injected"].get(k, 0) - before["faults_injected"].get(k, 0) for k in ("429", "500", "502"))
    # Every faulted answer went to a history call, and was followed by the call that succeeded.
    assert faulted >= 1 and after["history_requests"] - before["history_requests"] >= faulted + 2


async def test_a_key_pool_is_reconciled_with_every_keys_history(tmp_path: Path, sandbox_factory) -> None:
    """Each key's history holds only its own requests: reconcile reads every key of the pool, and
    names (by fingerprint, never the key) a key of the folder's runs that it was not given."""
    sb = await sandbox_factory()
    manifest = write_manifest(tmp_path / "m.yaml", 8)
    out = tmp_path / "out"
    keys = ["SG_pool_rec_key_a_0123456", "SG_pool_rec_key_b_abcdefg"]
    pool = {"SEGMIND_API_KEYS": ",".join(keys)}
    ran = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", key=None, env=pool)
    assert ran.code == 0, ran.err
    by_key = {ev["key_fp"] for ev in ledger_events(out) if ev["event"] == "submitted"}
    assert len(by_key) == 2  # both keys paid for some items

    r = await run_cli("reconcile", out, "--base-url", sb.url, "--json", key=None, env=pool)
    report = json.loads(r.out)
    assert r.code == 0, report
    assert report["billed_usd"] == pytest.approx(sb.stats()["charged_usd"]) and report["requests_billed"] == 8
    assert report["keys"] == 2 and report["unread_keys"] == [] and report["not_billed"] == []

    half = await run_cli("reconcile", out, "--base-url", sb.url, key=keys[0])
    assert half.code == 1
    assert Secret(keys[1]).fingerprint in by_key and Secret(keys[1]).fingerprint in half.out
    assert "were not given" in half.out and keys[1] not in half.out + half.err and keys[0] not in half.out
    one = json.loads((await run_cli("reconcile", out, "--base-url", sb.url, "--json", key=keys[0])).out)
    assert one["unread_keys"] == [Secret(keys[1]).fingerprint]
    assert {e["request_id"] for e in one["not_billed"]} == {
        ev["request_id"] for ev in ledger_events(out)
        if ev["event"] == "submitted" and ev["key_fp"] == Secret(keys[1]).fingerprint
    }
