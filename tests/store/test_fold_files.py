"""The fold keeps what the file checks and the superseded step need: when a file was recorded, from
which parameters it was made, and that a ``superseded`` line takes it away from the item."""

from __future__ import annotations

from typing import Any

from batchgen.store.events import Phase
from batchgen.store.fold import fold, parse_ts

TS = "2026-03-01T12:00:00.000Z"


def ev(event: str, ts: str = TS, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "item": "a", "event": event, **fields}


FIRST = [
    ev("intent", params_sha="old0000000000000"),
    ev("submitted", request_id="r-1"),
    ev("completed", request_id="r-1", output_url="https://cdn/1.png"),
    ev("downloaded", file="images/a.png", sha256="aa" * 32, bytes=10),
]
SECOND = [
    ev("intent", params_sha="new0000000000000"),
    ev("submitted", request_id="r-2"),
    ev("completed", request_id="r-2", output_url="https://cdn/2.png"),
]


def test_a_download_records_its_time_and_the_parameters_it_was_made_from() -> None:
    st = fold(FIRST).items["a"]
    assert st.downloaded_ts == parse_ts(TS) and st.file_params_sha == "old0000000000000"
    st = fold([*FIRST, *SECOND]).items["a"]
    assert st.file == "images/a.png" and st.file_params_sha == "old0000000000000" != st.params_sha


def test_a_download_line_without_a_readable_time_still_folds() -> None:
    st = fold([*FIRST[:3], {"item": "a", "event": "downloaded", "file": "images/a.png", "ts": "yesterday"}]).items["a"]
    assert st.state == Phase.DOWNLOADED and st.downloaded_ts is None


def test_superseded_takes_the_file_from_the_item_and_the_new_download_replaces_it() -> None:
    moved = ev("superseded", file="images/a~superseded-old00000.png", was="images/a.png", params_sha="old0000000000000")
    st = fold([*FIRST, *SECOND, moved]).items["a"]
    assert (st.state, st.file, st.sha256, st.bytes, st.file_params_sha) == (Phase.COMPLETED, None, None, None, None)
    st = fold([*FIRST, *SECOND, moved, ev("downloaded", file="images/a.png", sha256="bb" * 32, bytes=12)]).items["a"]
    assert (st.file, st.sha256, st.file_params_sha) == ("images/a.png", "bb" * 32, "new0000000000000")


def test_superseded_naming_another_file_changes_nothing() -> None:
    moved = ev("superseded", file="images/a~superseded-x.png", was="images/other.png", params_sha="x")
    st = fold([*FIRST, moved]).items["a"]
    assert st.state == Phase.DOWNLOADED and st.file == "images/a.png"


def test_superseding_a_downloaded_item_leaves_it_to_be_fetched_or_generated() -> None:
    moved = ev("superseded", file="images/a~superseded-old00000.png", was="images/a.png", params_sha="old0000000000000")
    assert fold([*FIRST, moved]).items["a"].state == Phase.COMPLETED  # its URL is known: fetched for free
    no_url = [FIRST[0], FIRST[1], ev("downloaded", file="images/a.png"), moved]
    assert fold(no_url).items["a"].state == Phase.PENDING
