"""plan: a downloaded item is done only while its file is the one the ledger recorded, inside the
folder; an item whose parameters changed since it was downloaded is generated again; items that
failed for good are submitted again only when the run asks for it.

Each case would otherwise lose data silently (a truncated or replaced image counted as done, an
edited prompt skipped), leak a file from outside the folder into exports, or leave a nightly run
failing for good with no way to try again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from batchgen.core.fastjson import _legacy_params_sha, params_sha
from batchgen.engine.plan import plan
from batchgen.store.fold import parse_ts
from batchgen.store.ledger import fold
from tests.engine.fakes import item

IT = item("a", seed=1)
SHA = params_sha(dict(IT.params))
TS = "2026-03-01T12:00:00.000Z"
BODY = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100
URL = "https://cdn/a.png"


def ev(event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": TS, "item": IT.id, "event": event, **fields}


def history(file: str = "images/a.png", body: bytes = BODY, sha: str = SHA, url: str | None = URL) -> list[dict[str, Any]]:
    return [
        ev("intent", params_sha=sha),
        ev("submitted", request_id="r-1"),
        ev("completed", request_id="r-1", output_url=url),
        ev("downloaded", request_id="r-1", file=file, sha256=hashlib.sha256(body).hexdigest(), bytes=len(body)),
    ]


def group_of(events: list[dict[str, Any]], images: Path, it: Any = IT, **options: Any) -> str:
    groups = plan([it], fold(events), images, **options)
    found = [name for name, members in groups.items() if it in members]
    assert len(found) == 1, groups
    return found[0]


def untouched_since_its_line(path: Path) -> None:
    """Gives the file a modification time before its ``downloaded`` line, as a real run leaves it."""
    t = parse_ts(TS) - 60
    os.utime(path, (t, t), follow_symlinks=False)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    (d / "images").mkdir(parents=True)
    return d


@pytest.fixture
def images(out: Path) -> Path:
    return out / "images"


# ---- the file behind a downloaded item -----------------------------------------------------------


def test_the_recorded_file_untouched_is_done(images: Path) -> None:
    (images / "a.png").write_bytes(BODY)
    untouched_since_its_line(images / "a.png")
    assert group_of(history(), images) == "done"


def test_a_file_written_since_but_with_the_recorded_content_is_done(images: Path) -> None:
    (images / "a.png").write_bytes(BODY)  # mtime now: after the line, so it is hashed, and it matches
    assert group_of(history(), images) == "done"


def test_a_truncated_file_is_fetched_again_from_its_recorded_url(images: Path) -> None:
    (images / "a.png").write_bytes(BODY[:-10])
    untouched_since_its_line(images / "a.png")  # the size alone tells, whatever the time says
    assert group_of(history(), images) == "download"


def test_a_file_rewritten_with_other_bytes_of_the_same_size_is_fetched_again(images: Path) -> None:
    (images / "a.png").write_bytes(BODY[:-6] + b"XXXXXX")
    assert group_of(history(), images) == "download"


def test_a_damaged_file_without_a_recorded_url_is_generated_again(images: Path) -> None:
    (images / "a.png").write_bytes(BODY[:-10])
    assert group_of(history(url=None), images) == "pending"


def test_an_untouched_file_is_trusted_on_its_size_without_being_read(images: Path, monkeypatch) -> None:
    """The cost rule: a resume stats every file and reads only those written after their line."""
    (images / "a.png").write_bytes(BODY)
    untouched_since_its_line(images / "a.png")
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: pytest.fail("an untouched file was hashed"))
    assert group_of(history(), images) == "done"


@pytest.mark.parametrize("kind", ["not-a-file", "directory"])
def test_something_that_is_not_a_regular_file_is_not_done(images: Path, kind: str) -> None:
    if kind == "directory":
        (images / "a.png").mkdir()
    else:
        os.mkfifo(images / "a.png")
    assert group_of(history(), images) == "download"


# ---- a ledger file outside the output folder -----------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An intact copy of the image outside the output folder: only its place is wrong."""
    p = tmp_path / "secret.png"
    p.write_bytes(BODY)
    return p


@pytest.mark.parametrize("name", ["../secret.png", "images/../../secret.png", "ABSOLUTE"])
def test_a_ledger_file_outside_the_folder_is_refused_and_fetched_into_it(images: Path, outside: Path, name: str) -> None:
    file = str(outside) if name == "ABSOLUTE" else name
    assert group_of(history(file=file), images) == "download"


def test_a_symlink_out_of_the_folder_is_refused(images: Path, outside: Path) -> None:
    (images / "a.png").symlink_to(outside)
    assert group_of(history(), images) == "download"


def test_an_images_folder_that_links_out_is_refused(out: Path, outside: Path) -> None:
    elsewhere = outside.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_bytes(BODY)
    (out / "images").rmdir()
    (out / "images").symlink_to(elsewhere)
    assert group_of(history(), out / "images") == "download"


def test_a_symlink_that_stays_inside_the_folder_is_followed(images: Path) -> None:
    (images / "kept.png").write_bytes(BODY)
    (images / "a.png").symlink_to("kept.png")
    assert group_of(history(), images) == "done"


# ---- parameters changed since the download -------------------------------------------------------


def test_an_item_edited_since_it_was_downloaded_is_changed(images: Path) -> None:
    (images / "a.png").write_bytes(BODY)
    assert group_of(history(), images, item("a", seed=2)) == "changed"
    assert group_of(history(), images, item("a", seed=1, style_type="ANIME")) == "changed"


def test_an_edited_item_is_changed_even_when_its_file_is_gone(images: Path) -> None:
    """Its recorded URL is the old image: fetching it would bring back what the user edited away."""
    assert group_of(history(), images, item("a", seed=2)) == "changed"


def test_an_unchanged_item_hashed_the_pre_0_2_way_is_not_changed(images: Path) -> None:
    it = item("a", prompt="café ☕ 東京", seed=1)
    legacy = _legacy_params_sha(dict(it.params))
    assert legacy != params_sha(dict(it.params))
    (images / "a.png").write_bytes(BODY)
    assert group_of(history(sha=legacy), images, it) == "done"


# ---- failed for good, and --retry-failed ---------------------------------------------------------


FAILED_FOR_GOOD = [ev("intent", params_sha=SHA), ev("failed", stage="generate", error="blocked", retryable=False)]


def test_failed_for_good_is_left_alone_without_the_option(images: Path) -> None:
    assert group_of(FAILED_FOR_GOOD, images) == "failed"


def test_failed_for_good_is_submitted_again_with_the_option(images: Path) -> None:
    assert group_of(FAILED_FOR_GOOD, images, retry_failed=True) == "retry_failed"


def test_the_option_leaves_other_groups_as_they_were(images: Path) -> None:
    retryable = [ev("intent", params_sha=SHA), ev("failed", stage="submit", retryable=True)]
    assert group_of(retryable, images, retry_failed=True) == "resubmit"
    paid = [*history()[:3], ev("failed", stage="download", output_url=URL, retryable=False)]
    assert group_of(paid, images, retry_failed=True) == "download"  # paid already: fetched, not paid again
    assert group_of(FAILED_FOR_GOOD, images, item("a", seed=2), retry_failed=True) == "resubmit"
