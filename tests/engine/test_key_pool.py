"""A pool of keys in the engine: submits spread by free capacity, every request about a job with the
key that made it, a refused or penniless key retired while the others go on. No socket: each key is
a scripted client that names its request ids after itself and counts any question about another's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.api.outcomes import Accepted, Expired, JobResult, JobStatus, Outcome, RunFatal
from batchgen.core.errors import ExitCode
from batchgen.engine.config import RetryPolicy, RunConfig
from batchgen.engine.context import PoolKey, RunOutcome
from batchgen.engine.keys import KeyPool
from batchgen.engine.root import run_batch
from batchgen.sandbox.images import render_png
from batchgen.store.ledger import Ledger, readable_events
from tests.engine.fakes import NO_WAIT, FakeResponse, item, open_ledger
from tests.engine.recover_fakes import QUICK, FakeHistory, row
from tests.support.sandbox import FakeClock

PNG = render_png("a lighthouse", 1, 64, 48)
CREDITS_GONE = RunFatal("credits", "insufficient credits (HTTP 406: Insufficient credits)", 406)
REFUSED = RunFatal("auth", "the API key was refused (HTTP 401: Unauthorized)", 401)


class KeyClient:
    """One key: accepts submits as ``<name>-<n>``, answers COMPLETED about its own requests only
    (another key's request is counted in ``foreign``, as the service would answer it 404)."""

    base_url = "https://api.example.test"

    def __init__(self, name: str, *, submit_answers: list[Outcome] | None = None,
                 status_answers: list[Outcome] | None = None) -> None:
        self.name = name
        self.submits: list[str] = []
        self.asked: list[str] = []
        self.foreign: list[str] = []
        self._submit_answers = list(submit_answers or [])
        self._status_answers = list(status_answers or [])

    async def submit(self, slug: str, params: dict[str, Any]) -> Outcome:
        if self._submit_answers:
            return self._submit_answers.pop(0)
        rid = f"{self.name}-{len(self.submits)}"
        self.submits.append(rid)
        return Accepted(rid)

    def _mine(self, request_id: str) -> bool:
        self.asked.append(request_id)
        if not request_id.startswith(self.name + "-"):
            self.foreign.append(request_id)
            return False
        return True

    async def status(self, request_id: str) -> Outcome:
        assert self._mine(request_id), f"{self.name} was asked about {request_id}"
        if self._status_answers:
            return self._status_answers.pop(0)
        return JobStatus("COMPLETED")

    async def result(self, request_id: str) -> Outcome:
        assert self._mine(request_id), f"{self.name} was asked about {request_id}"
        return JobResult("COMPLETED", f"https://cdn/{request_id}.png", cost_usd=0.5, inference_time=1.0)

    @contextlib.asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[FakeResponse]:
        yield FakeResponse(PNG)


def config(**cfg: Any) -> RunConfig:
    return RunConfig(**{"slug": "test-model", "price_usd": 0.5, "expected_latency_s": 0.01, "retry": NO_WAIT,
                        "concurrency": 4, **cfg})


async def run_pool(folder: Path, keys: list[PoolKey], n: int, ledger: Ledger | None = None,
                   **cfg: Any) -> tuple[RunOutcome, list[str]]:
    warned: list[str] = []
    ledger = ledger or open_ledger(folder)
    try:
        with anyio.fail_after(20):
            outcome = await run_batch(config(**cfg), [item(i) for i in range(n)], folder, ledger, keys,
                                      handle_signals=False, on_warning=warned.append)
    finally:
        ledger.close()
    return outcome, warned


def ledger_events(folder: Path) -> list[dict[str, Any]]:
    return list(readable_events(folder / "ledger.jsonl"))


# ---- choosing a key ------------------------------------------------------------------------------


def test_pick_takes_the_key_free_soonest_and_spreads_ties(clock: FakeClock) -> None:
    pool = KeyPool([PoolKey(KeyClient("a")), PoolKey(KeyClient("b"))], config(rpm=60.0, retry=RetryPolicy()), clock)
    a, b = pool.slots
    assert a.limiter is not b.limiter and a.limiter.configured_rpm == b.limiter.configured_rpm == 60.0  # per key
    order = []
    for _ in range(4):
        slot = pool.pick()
        assert slot is not None
        order.append(slot.index)
        slot.limiter._next_at = max(clock(), slot.limiter.ready_at()) + 1.0  # what acquire() does at 60 rpm
        slot.limiter.requests += 1
    assert order == [0, 1, 0, 1]
    # A 429 on key a pauses a alone: b takes every submit until a's pause ends.
    a.limiter.on_rate_limited(30.0)
    assert pool.pick() is b
    clock.advance(31.0)
    assert pool.pick() in (a, b) and a.limiter.ready_at() <= clock()


def test_a_retired_key_is_never_picked_and_none_is_left_after_the_last(clock: FakeClock) -> None:
    pool = KeyPool([PoolKey(KeyClient("a"), "fp-a"), PoolKey(KeyClient("b"), "fp-b")], config(), clock)
    a, b = pool.slots
    assert pool.retire(a, CREDITS_GONE) is True and pool.retire(a, CREDITS_GONE) is False
    assert not a.refused  # out of credits, it may still read its own requests
    assert all(pool.pick() is b for _ in range(3))
    pool.retire(b, REFUSED)
    assert b.refused and pool.pick() is None
    assert pool.index_of("fp-b") == 1 and pool.index_of(None) == 0 and pool.index_of("fp-gone") is None
    assert "key 2 of 2 (fp-b)" == b.label


# ---- whole runs ----------------------------------------------------------------------------------


async def test_submits_spread_and_every_question_goes_to_the_key_that_asked(tmp_path: Path) -> None:
    a, b = KeyClient("a"), KeyClient("b")
    outcome, warned = await run_pool(tmp_path, [PoolKey(a, "fp-a"), PoolKey(b, "fp-b")], 8)
    assert outcome.exit_code == ExitCode.OK and outcome.counts["downloaded"] == 8 and warned == []
    assert len(a.submits) == 4 and len(b.submits) == 4  # no limit known: even turns
    assert a.foreign == [] and b.foreign == []
    assert sorted(set(a.asked)) == sorted(a.submits) and sorted(set(b.asked)) == sorted(b.submits)
    # The ledger names each request's key by its fingerprint, on the intent and on the answer.
    for ev in ledger_events(tmp_path):
        if ev["event"] == "submitted":
            assert ev["key_fp"] == ("fp-a" if ev["request_id"].startswith("a-") else "fp-b")
        if ev["event"] == "intent":
            assert ev["key_fp"] in ("fp-a", "fp-b")


async def test_a_key_out_of_credits_is_retired_once_and_the_other_does_the_rest(tmp_path: Path) -> None:
    a, b = KeyClient("a"), KeyClient("b", submit_answers=[Accepted("b-early"), CREDITS_GONE])
    outcome, warned = await run_pool(tmp_path, [PoolKey(a, "fp-a"), PoolKey(b, "fp-b")], 6)
    assert outcome.exit_code == ExitCode.OK and outcome.counts["downloaded"] == 6
    assert b.submits == [] and len(a.submits) == 5  # b's one accepted submit is read with b
    assert "b-early" in b.asked and a.foreign == [] and b.foreign == []
    assert len(warned) == 1 and "key 2 of 2 (fp-b) retired for this run" in warned[0]
    assert "insufficient credits" in warned[0]
    # The refusal cost nothing: the item it met was submitted again, with a.
    assert [ev["event"] for ev in ledger_events(tmp_path) if ev.get("status") == 406] == ["submit_retry"]


@pytest.mark.parametrize("where", ["submit", "poll"])
async def test_a_key_refused_mid_run_leaves_its_requests_in_the_ledger(tmp_path: Path, where: str) -> None:
    """b's first submit is accepted, then b is revoked: its next submit or its first poll answers
    401. a does the rest; b's requests stay in flight in the ledger, for a run in which b is accepted
    again, and no key asks about them meanwhile (only b may, and b is refused)."""
    if where == "submit":
        b = KeyClient("b", submit_answers=[Accepted("b-0"), REFUSED])
    else:
        b = KeyClient("b", status_answers=[REFUSED])
    a = KeyClient("a")
    outcome, warned = await run_pool(tmp_path, [PoolKey(a, "fp-a"), PoolKey(b, "fp-b")], 5)
    b_made = ["b-0"] if where == "submit" else b.submits
    assert outcome.exit_code == ExitCode.FAILED_ITEMS  # finished, b's items left in flight
    assert outcome.counts["in_flight"] == len(b_made) >= 1
    assert outcome.counts["downloaded"] == 5 - len(b_made) == len(a.submits)
    assert len(warned) == 1 and "key 2 of 2 (fp-b) retired" in warned[0] and "stay in the ledger" in warned[0]
    assert b.asked == ([] if where == "submit" else ["b-0"]) and a.foreign == []
    state = Ledger(tmp_path / "ledger.jsonl").state
    left = sorted((st.request_id, st.key_fp) for st in state.items.values() if st.state == "submitted")
    assert left == sorted((rid, "fp-b") for rid in b_made)


async def test_the_run_stops_only_when_no_key_is_left(tmp_path: Path) -> None:
    a = KeyClient("a", submit_answers=[CREDITS_GONE])
    b = KeyClient("b", submit_answers=[CREDITS_GONE])
    outcome, warned = await run_pool(tmp_path, [PoolKey(a, "fp-a"), PoolKey(b, "fp-b")], 3)
    assert outcome.exit_code == ExitCode.ABORTED
    assert outcome.reason is not None and outcome.reason.startswith("no API key left (key ")
    assert len(warned) == 1 and outcome.counts["pending"] == 3


async def test_one_key_refused_aborts_as_it_always_did(tmp_path: Path) -> None:
    a = KeyClient("a", submit_answers=[REFUSED])
    outcome, warned = await run_pool(tmp_path, [PoolKey(a, "fp-a")], 2)
    assert (outcome.exit_code, outcome.reason) == (ExitCode.ABORTED, REFUSED.message) and warned == []


async def test_a_resumed_request_is_polled_with_its_key_and_an_unknown_key_is_left(tmp_path: Path) -> None:
    """The ledger names each request's key; a key this run does not have is not asked with another's."""
    ledger = open_ledger(tmp_path)
    for n, (rid, fp) in enumerate([("b-7", "fp-b"), ("a-3", "fp-a"), ("c-1", "fp-c")]):
        name = item(n).id
        ledger.append("intent", name, params_sha="x", attempt=1, params=dict(item(n).params), key_fp=fp)
        ledger.append("submitted", name, request_id=rid, key_fp=fp)
    a, b = KeyClient("a"), KeyClient("b")
    outcome, warned = await run_pool(tmp_path, [PoolKey(a, "fp-a"), PoolKey(b, "fp-b")], 3, ledger=ledger)
    assert "b-7" in b.asked and "a-3" in a.asked and a.foreign == [] and b.foreign == []
    assert a.submits == [] and b.submits == []  # nothing paid again
    assert outcome.counts["downloaded"] == 2 and outcome.counts["in_flight"] == 1
    assert len(warned) == 1 and "by key fp-c" in warned[0] and "left as they are" in warned[0]


# ---- the request history, per key ----------------------------------------------------------------


@pytest.mark.parametrize("b_history_says", ["completed", "refused"])
async def test_an_expired_record_is_looked_up_in_the_history_of_its_key(tmp_path: Path, b_history_says: str) -> None:
    """b's request expired unread: b's history is asked about it, never a's. When b's history
    refuses b (revoked meanwhile), b leaves the run; a's history stays available to a."""
    histories = {"a": FakeHistory(), "b": FakeHistory()}
    if b_history_says == "completed":
        histories["b"].script("b-0", row("b-0", {"prompt": "x"}, 0.0))
    else:
        histories["b"].script("b-0", REFUSED)
    a, b = KeyClient("a"), KeyClient("b", status_answers=[Expired("HTTP 404: Request b-0 not found")])
    keys = [PoolKey(c, f"fp-{c.name}", (lambda h: lambda acquire: h)(histories[c.name])) for c in (a, b)]
    outcome, warned = await run_pool(tmp_path, keys, 4, recovery=QUICK)
    assert histories["b"].count("get") == 1 and histories["a"].count("get") == 0
    assert a.foreign == [] and b.foreign == []
    if b_history_says == "completed":
        assert outcome.exit_code == ExitCode.OK and outcome.counts["downloaded"] == 4 and warned == []
        assert outcome.counts["recovered"] == 1 and len(b.submits) == 2 and len(a.submits) == 2  # nothing paid again
    else:
        # b's expired request stays in flight for a later run; its other one too, unless it was read
        # before b was refused (the order depends on the poll schedule): nothing is lost or repaid.
        assert outcome.exit_code == ExitCode.FAILED_ITEMS and outcome.counts["in_flight"] in (1, 2)
        assert outcome.counts["downloaded"] + outcome.counts["in_flight"] == 4 and len(a.submits) == 2
        assert len(warned) == 1 and "key 2 of 2 (fp-b) retired" in warned[0]
        assert not any("no request history" in w for w in warned)
