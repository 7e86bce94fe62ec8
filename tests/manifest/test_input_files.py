"""What a manifest or prompts file may be and hold: a regular file under its cap, rows split only at
line ends, names matched whole, strings without control characters and under the length cap."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchgen.manifest import ManifestError, load_manifest, loader, loads_manifest, promptfiles
from batchgen.manifest.validate import MAX_TEXT_CHARS

ROOT = Path(__file__).resolve().parents[2]


def _error(path: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value


def _without_blocking(fn: Callable[[], Any], fifo: Path) -> Any:
    """``fn()``'s result or exception; if it hangs on the FIFO, a writer releases it and the test fails."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked open return
        t.join(30)
        pytest.fail(f"opening {fifo} blocked waiting for a writer")
    if "error" in box:
        raise box["error"]
    return box["result"]


# ----------------------------------------------------------------------------- not regular files


def test_a_fifo_manifest_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError) as info:
        _without_blocking(lambda: load_manifest(fifo), fifo)
    assert str(info.value) == f"{fifo}: not a regular file (a FIFO); give a manifest file"


def test_a_fifo_prompts_file_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    m = tmp_path / "m.yaml"
    m.write_text("name: n\nprompts_file: p.txt\n")
    with pytest.raises(ManifestError) as info:
        _without_blocking(lambda: load_manifest(m), fifo)
    e = info.value
    assert (e.path, e.line, e.field) == (str(m), 2, "prompts_file")
    assert e.message == f"{fifo}: not a regular file (a FIFO); give a prompts file"


def test_a_directory_named_as_a_prompts_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.txt").mkdir()
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.txt\n")
    assert _error(m).message == f"{tmp_path / 'p.txt'}: is a directory, not a prompts file"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression fails fast, not the machine


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("zero.yaml", "{d}/zero.yaml: not a regular file (a character device); give a manifest file"),
        ("m.yaml", "{d}/m.yaml:1: prompts_file: {d}/zero.txt: not a regular file (a character device); "
                   "give a prompts file"),
    ],
)
def test_dev_zero_behind_a_link_is_refused_before_reading_a_byte(tmp_path: Path, manifest: str, expected: str) -> None:
    """Through the command line in a child with 2 GB of address space: it once read gigabytes."""
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    (tmp_path / "m.yaml").write_text("prompts_file: zero.txt\n")
    p = subprocess.run(
        [sys.executable, "-m", "batchgen", "plan", str(tmp_path / manifest), "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == ["batchgen: " + expected.format(d=tmp_path)]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs a /proc file (size 0, content > 0)")
def test_the_size_cap_is_counted_while_reading_not_taken_from_the_reported_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc files are regular files that report size 0 whatever they hold: only counting tells.
    (tmp_path / "p.txt").symlink_to("/proc/self/status")
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.txt\n")
    assert len(load_manifest(m).items) > 3  # under the real cap it reads as prompts
    monkeypatch.setattr(promptfiles, "MAX_PROMPTS_FILE_BYTES", 100)
    assert _error(m).message == f"{tmp_path / 'p.txt'}: file is too large (over the limit of 100 bytes)"
    monkeypatch.setattr(loader, "MAX_MANIFEST_BYTES", 100)
    big = tmp_path / "big.yaml"
    big.symlink_to("/proc/self/status")
    assert _error(big).message == (
        "file is too large (over the limit of 100 bytes); put the prompts in a prompts_file"
    )


# ----------------------------------------------------------------------------- rows end at "\n"


def _rows(tmp_path: Path, name: str, content: str) -> list[tuple[int, str]]:
    (tmp_path / name).write_bytes(content.encode())
    m = tmp_path / "m.yaml"
    m.write_text(f"prompts_file: {name}\n")
    return [(it.line, it.params["prompt"]) for it in load_manifest(m).items]


def test_txt_prompts_split_only_at_line_ends(tmp_path: Path) -> None:
    got = _rows(tmp_path, "p.txt", "a\u2028b\u2029c\nd\r\ne\n")
    assert got == [(1, "a\u2028b\u2029c"), (2, "d"), (3, "e")]


@pytest.mark.parametrize("char", ["\x0c", "\x85", "\x1c", "\x0b", "\r"])
def test_a_control_character_inside_a_txt_line_is_a_mistake_not_a_line_break(tmp_path: Path, char: str) -> None:
    (tmp_path / "p.txt").write_bytes(f"fine\nleft{char}right\nalso fine\n".encode())
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.txt\n")
    e = _error(m)
    assert (e.path, e.line, e.field) == (str(tmp_path / "p.txt"), 2, "prompt")
    assert e.message == f"contains the control character U+{ord(char):04X}; only newline and tab are allowed"


def test_jsonl_rows_split_only_at_newlines(tmp_path: Path) -> None:
    # U+2028 and U+0085 are valid, unescaped, inside a JSON string
    content = '{"prompt": "one\u2028line"}\r\n{"prompt": "two\u0085x", "id": "t"}\n{"prompt": "three"}\n'
    (tmp_path / "p.jsonl").write_bytes(content.encode())
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.jsonl\n")
    e = _error(m)  # the second row parses now, and its C1 control is refused on its own line
    assert (e.line, e.field) == (2, "prompt") and "U+0085" in e.message
    got = _rows(tmp_path, "p.jsonl", content.replace("\u0085", " "))
    assert got == [(1, "one\u2028line"), (2, "two x"), (3, "three")]


# ----------------------------------------------------------------------------- whole-string matches


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('items:\n  - {id: "foo\\n", prompt: a}\n', "items[0].id"),
        ('name: "foo\\n"\nitems: [a]\n', "name"),
        ('items:\n  - {prompt: a, color_palette: {members: [{color_hex: "#aabbcc\\n", color_weight: 1}]}}\n',
         "items[0].color_palette.members[0].color_hex"),
        ("id_template: \"{id}-{style_type\\n}\"\nmatrix: {style_type: [ANIME]}\nitems: [a]\n", "id_template"),
    ],
)
def test_names_and_patterns_match_the_whole_string_not_up_to_a_final_newline(text: str, field: str) -> None:
    with pytest.raises(ManifestError) as info:
        loads_manifest(text, "m.yaml")
    assert info.value.field == field, str(info.value)


def test_a_row_id_with_a_final_newline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "id": "foo\\n"}\n')
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.jsonl\n")
    e = _error(m)
    assert (e.line, e.field) == (1, "id") and "'foo\\n'" in e.message


# ----------------------------------------------------------------------------- what strings may hold


def test_prompts_may_hold_newlines_and_tabs() -> None:
    m = loads_manifest('items:\n  - "line one\\nline\\ttwo"\n  - prompt: |\n      block\n      scalar\n')
    assert [it.params["prompt"] for it in m.items] == ["line one\nline\ttwo", "block\nscalar\n"]


@pytest.mark.parametrize(
    ("text", "line", "field", "code"),
    [
        ('items:\n  - "clear \\e[2J screen"\n', 2, "items[0].prompt", "U+001B"),
        ('items:\n  - {prompt: a, negative_prompt: "x\\0y"}\n', 2, "items[0].negative_prompt", "U+0000"),
        ('items:\n  - "carriage\\rreturn"\n', 2, "items[0].prompt", "U+000D"),
        ('defaults:\n  negative_prompt: "\\x7f"\nitems: [a]\n', 2, "defaults.negative_prompt", "U+007F"),
        ('matrix:\n  negative_prompt: [ok, "b\\x07"]\nitems: [a]\n', 2, "matrix.negative_prompt[1]", "U+0007"),
        ('model: other\nitems:\n  - {prompt: a, extra: {deep: ["\\x1b"]}}\n', 3, "items[0].extra.deep[0]", "U+001B"),
        ('output: "out/\\x00"\nitems: [a]\n', 1, "output", "U+0000"),
    ],
)
def test_control_characters_are_refused_in_every_string_sent(text: str, line: int, field: str, code: str) -> None:
    with pytest.raises(ManifestError) as info:
        loads_manifest(text, "m.yaml")
    e = info.value
    assert (e.line, e.field) == (line, field), str(e)
    assert e.message == f"contains the control character {code}; only newline and tab are allowed"


def test_prompt_length_cap() -> None:
    ok = loads_manifest(f"items:\n  - {'p' * MAX_TEXT_CHARS}\n")
    assert len(ok.items[0].params["prompt"]) == MAX_TEXT_CHARS == 10_000
    with pytest.raises(ManifestError) as info:
        loads_manifest(f"items:\n  - {'p' * (MAX_TEXT_CHARS + 1)}\n", "m.yaml")
    assert str(info.value) == "m.yaml:2: items[0].prompt: is 10001 characters long; the limit is 10000"


def test_a_long_prompt_in_a_prompts_file_is_blamed_on_its_row(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(f"prompt\nshort\n{'q' * 10_001}\n")
    m = tmp_path / "m.yaml"
    m.write_text("prompts_file: p.csv\n")
    e = _error(m)
    assert (e.path, e.line, e.field) == (str(tmp_path / "p.csv"), 3, "prompt") and "10001 characters" in e.message
