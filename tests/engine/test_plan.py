"""plan: where a run picks each item up, from the ledger's state alone (plus whether its file exists).

A wrong group either pays twice (resubmitting what is paid for) or loses work (skipping what is
not done), so every group is pinned here against the events that lead to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchgen.core.fastjson import params_sha
from batchgen.engine.plan import plan
from batchgen.store.ledger import fold
from tests.engine.fakes import item

IT = item("a", seed=1)
SHA = params_sha(dict(IT.params))
TS = "2026-03-01T12:00:00.000Z"


def ev(event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": TS, "item": IT.id, "event": event, **fields}


INTENT = ev("intent", params_sha=SHA)
SUBMITTED = ev("submitted", request_id="r-1")
COMPLETED = ev("completed", request_id="r-1", output_url="https://cdn/a.png", cost_usd=0.5)
DOWNLOADED = ev("downloaded", request_id="r-1", file="images/a.png")


def group_of(history: list[dict[str, Any]], images: Path, it: Any = IT) -> str:
    groups = plan([it], fold(history), images)
    found = [name for name, members in groups.items() if it in members]
    assert len(found) == 1, groups
    return found[0]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


def test_every_group_is_present_even_when_empty(images: Path) -> None:
    assert set(plan([], fold([]), images)) == {
        "done", "failed", "poll", "download", "resubmit", "changed", "retry_failed", "uncertain", "pending",
    }


def test_an_item_the_ledger_never_saw_is_pending(images: Path) -> None:
    assert group_of([], images) == "pending"


def test_downloaded_with_its_file_present_is_done(images: Path) -> None:
    (images / "a.png").write_bytes(b"png")
    assert group_of([INTENT, SUBMITTED, COMPLETED, DOWNLOADED], images) == "done"


def test_downloaded_but_file_gone_is_downloaded_again_from_the_recorded_url(images: Path) -> None:
    assert group_of([INTENT, SUBMITTED, COMPLETED, DOWNLOADED], images) == "download"


def test_downloaded_file_gone_and_no_url_known_is_generated_again(images: Path) -> None:
    assert group_of([INTENT, SUBMITTED, ev("downloaded", file="images/a.png")], images) == "pending"


def test_completed_is_downloaded_without_paying_again(images: Path) -> None:
    assert group_of([INTENT, SUBMITTED, COMPLETED], images) == "download"


def test_submitted_is_polled(images: Path) -> None:
    assert group_of([INTENT, SUBMITTED], images) == "poll"


def test_an_intent_without_an_answer_is_uncertain(images: Path) -> None:
    assert group_of([INTENT], images) == "uncertain"


def test_a_refused_submit_returns_to_pending(images: Path) -> None:
    assert group_of([INTENT, ev("submit_retry", status=429)], images) == "pending"


def test_expired_is_submitted_again_as_pending(images: Path) -> None:
    assert group_of([INTENT, SUBMITTED, ev("expired", request_id="r-1")], images) == "pending"


def test_failed_download_of_a_paid_result_is_downloaded_not_paid_again(images: Path) -> None:
    failed = ev("failed", stage="download", output_url="https://cdn/a.png", retryable=False)
    assert group_of([INTENT, SUBMITTED, COMPLETED, failed], images) == "download"


def test_failed_for_a_retryable_reason_is_resubmitted(images: Path) -> None:
    assert group_of([INTENT, ev("failed", stage="submit", retryable=True)], images) == "resubmit"


def test_failed_for_good_stays_failed(images: Path) -> None:
    assert group_of([INTENT, ev("failed", stage="submit", retryable=False)], images) == "failed"


def test_failed_for_good_is_resubmitted_once_its_parameters_changed(images: Path) -> None:
    history = [INTENT, ev("failed", stage="submit", retryable=False)]
    edited = item("a", seed=2)
    assert group_of(history, images, edited) == "resubmit"


def test_paid_but_edited_since_is_generated_again_not_downloaded(images: Path) -> None:
    failed = ev("failed", stage="download", output_url="https://cdn/a.png", retryable=False)
    edited = item("a", seed=2)
    assert group_of([INTENT, SUBMITTED, COMPLETED, failed], images, edited) == "resubmit"


def test_items_keep_their_manifest_order_within_a_group(images: Path) -> None:
    items = [item(n) for n in (3, 1, 2)]
    assert plan(items, fold([]), images)["pending"] == items
