"""Recovery in a whole run (the composition root): what a resume does with an earlier run's unanswered
intent, with a request history and without one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from batchgen.api.outcomes import Accepted, HistoryUnavailable, JobResult, JobStatus
from batchgen.engine.config import RunConfig
from batchgen.engine.root import run_batch
from batchgen.sandbox.images import render_png
from batchgen.store import events as E
from batchgen.store.ledger import parse_ts
from tests.engine.fakes import NO_WAIT, FakeClient, item, open_ledger
from tests.engine.recover_fakes import QUICK, FakeHistory, row

ITEMS = [item(i) for i in range(3)]
URL = "https://files.example/r-0.png"


def crashed_after_posting(folder: Path) -> float:
    """A ledger whose run died right after sending item-000's POST: its intent has no answer."""
    ledger = open_ledger(folder)
    ledger.write(E.run_start(pid=1, items=3, pending=3))
    ev = ledger.write(E.intent("item-000", params_sha="x", attempt=1, params=dict(ITEMS[0].params)))
    ledger.close()
    return parse_ts(ev["ts"])


async def run_whole(folder: Path, client: FakeClient, history: FakeHistory | None) -> tuple[Any, list[str]]:
    warnings: list[str] = []
    config = RunConfig(slug="test-model", price_usd=0.5, expected_latency_s=0.02, retry=NO_WAIT, recovery=QUICK)
    ledger = open_ledger(folder)
    with anyio.fail_after(20):
        outcome = await run_batch(config, ITEMS, folder, ledger, client, handle_signals=False,
                                  history=(lambda acquire: history) if history is not None else None,
                                  on_warning=warnings.append)
    ledger.close()
    return outcome, warnings


def fresh_client() -> FakeClient:
    png = render_png("x", 1, 32, 32)
    return FakeClient(submit=[Accepted(f"r-new-{i}") for i in range(5)], status=[JobStatus("COMPLETED")],
                      result=[JobResult("COMPLETED", "https://cdn/x.png", cost_usd=0.5, inference_time=1.0)],
                      images={"https://cdn/x.png": png, URL: png})


async def test_a_resumed_intent_found_in_the_history_is_downloaded_not_paid_again(tmp_path: Path) -> None:
    sent = crashed_after_posting(tmp_path)
    created = datetime.fromtimestamp(sent + 0.1, UTC)
    history = FakeHistory(rows=[replace(row("r-0", dict(ITEMS[0].params), 0.0, generation_url=URL), created=created)])
    client = fresh_client()
    outcome, warnings = await run_whole(tmp_path, client, history)
    assert outcome.exit_code == 0 and warnings == []
    submitted = [params["prompt"] for method, params in client.calls if method == "submit"]
    assert submitted == ["prompt item-001", "prompt item-002"]  # item-000 was not paid for again
    assert outcome.counts["recovered"] == 1 and outcome.counts["uncertain_resubmits"] == 0
    assert ("download", URL) in client.calls
    assert history.count("list") == 2  # the probe, then one listing


async def test_without_a_history_one_warning_and_the_old_resubmit(tmp_path: Path) -> None:
    crashed_after_posting(tmp_path)
    history = FakeHistory(probe=HistoryUnavailable("no request history at http://x (HTTP 404: not found)", 404))
    client = fresh_client()
    outcome, warnings = await run_whole(tmp_path, client, history)
    assert outcome.exit_code == 0
    assert len(warnings) == 1 and "no request history" in warnings[0]
    assert client.count("submit") == 3 and outcome.counts["uncertain_resubmits"] == 1
    assert outcome.counts["recovered"] == 0 and history.count("list") == 1 and history.count("get") == 0


async def test_a_run_with_nothing_to_do_does_not_wait_for_the_history(tmp_path: Path) -> None:
    class Hanging(FakeHistory):
        async def list_page(self, **kw: Any) -> Any:
            await anyio.sleep(3600)

    outcome, warnings = await run_whole(tmp_path, fresh_client(), Hanging())
    assert outcome.exit_code == 0 and warnings == []
    outcome, _ = await run_whole(tmp_path, fresh_client(), Hanging())  # all done: ends at once
    assert outcome.exit_code == 0 and outcome.counts["submitted"] == 0


async def test_a_finished_run_asks_the_history_nothing(tmp_path: Path) -> None:
    outcome, _ = await run_whole(tmp_path, fresh_client(), FakeHistory())
    assert outcome.exit_code == 0
    history = FakeHistory()
    outcome, warnings = await run_whole(tmp_path, fresh_client(), history)  # a resume of the finished run
    assert outcome.exit_code == 0 and outcome.counts["submitted"] == 0 and warnings == []
    assert history.count("list") == 0 and history.count("get") == 0


async def test_recovery_policy_defaults_are_the_documented_ones() -> None:
    policy = RunConfig(slug="m", price_usd=0.1).recovery
    assert policy.landing_wait_s == 120.0 and policy.expired_wait_s == 1800.0 and policy.patience_s == 900.0
    assert [policy.recheck(n) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert QUICK.recheck(3) == 0.0


async def test_history_calls_count_against_the_rate_limit_when_polls_do(tmp_path: Path) -> None:
    for scope, counted in (("all", True), ("submit", False)):
        hooks: list[Any] = []

        def make(acquire: Any, hooks: list[Any] = hooks) -> FakeHistory:
            hooks.append(acquire)
            return FakeHistory()

        folder = tmp_path / scope
        folder.mkdir()
        config = RunConfig(slug="test-model", price_usd=0.5, expected_latency_s=0.02, retry=NO_WAIT, rpm_scope=scope)
        ledger = open_ledger(folder)
        with anyio.fail_after(20):
            await run_batch(config, ITEMS, folder, ledger, fresh_client(), handle_signals=False, history=make)
        ledger.close()
        (hook,) = hooks
        assert (hook is not None) == counted
        if counted:
            assert hook.__self__.__class__.__name__ == "RateLimiter" and hook.__name__ == "acquire"
