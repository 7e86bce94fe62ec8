"""The fast way into the manifest loader: a Rust YAML parser (yaml-rs, the ``fast`` extra) instead of
PyYAML's node tree.

PyYAML composes a node with two position marks for every value: about 25 times the text in memory
and most of the load time of a 100,000-item manifest. yaml-rs returns plain values in a fraction
of that time, but it reads YAML 1.2 (``yes`` stays a string, ``017`` is 17, ``1e3`` a number) and
keeps no positions. So its result is used only where it provably means what PyYAML's SafeLoader
would read: the top level is wrapped in light nodes, and the items stay plain values, vouched for
one by one and handed to the one validator as they are. Anything it cannot vouch for raises
``Fallback``, and so does any mistake the validator finds: the caller then loads the file the
PyYAML way, which reports ``file:line: field: message``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from sys import intern
from typing import Any

import yaml
from yaml.resolver import Resolver

from .validate import ENTRY_KEYS, YAML, Origin
from .yamlnodes import BOOL, FLOAT, INT, MAP, NULL, SEQ, STR, Converter

try:
    import yaml_rs
except ImportError:  # the worker runs the same without it, only slower on large manifests
    yaml_rs = None

__all__ = ["At", "Fallback", "FastConverter", "PlainItems", "available", "cursor", "fast_root", "plain_item", "plain_size"]


class Fallback(Exception):
    """yaml-rs's reading cannot be vouched for, or the manifest has a mistake to report."""


def available() -> bool:
    return yaml_rs is not None


class _Mark:
    """The one field of a position mark the loader reads when a manifest is valid."""

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line


_NOWHERE = _Mark(0)  # positions only matter in error messages, and an error falls back anyway

# Line breaks PyYAML counts besides "\n": with them the line of an item cannot be found by splitting.
_ODD_BREAK_CHARS = "\r\x85\u2028\u2029"
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
# Tags, anchors, aliases, reserved indicators, directives (``%`` at a line start): PyYAML's reading
# of these differs (or they need its alias bounds); rare enough in manifests to leave to it.
# (Each search starts with the character it looks for, so the regex engine skips ahead to it.)
_SPECIAL_CHARS = "!&*@`"
_SPECIAL = re.compile(r"[!&*@`](?<![^\s\[{,][!&*@`])")  # at a line start or after a space, [, { or ,
# Escapes of lone surrogates: PyYAML builds such strings, a Rust parser cannot.
_SURROGATE_ESCAPE = re.compile(r"\\u0*[dD][89a-fA-F]|\\U0*[dD][89a-fA-F][0-9a-fA-F]{2}\b")
# A whole plain scalar that starts like a number: after a line start, ``:``, ``,``, ``[``, ``{``, ``?``
# or a list dash, up to the end of the line, ``,``, ``]``, ``}`` or a comment. Where YAML 1.1 and 1.2
# agree on one, it is a _PLAIN_NUMBER; any other (017, 0o17, 1e3, +.5, 0x1F, 1_000, ...) sends the
# file to PyYAML. One search finds the first that is not (the lookahead passes over a token that is
# exactly a _PLAIN_NUMBER): a manifest of 100k numbers costs one scan, not a match per number.
_NUMBER_TOKEN = r"[-+]?\.?[0-9][^\s,\[\]{}#]*"
_NUMBER_END = r"[ \t]*(?=$|[,\]}]|[ \t]#)"
_PLAIN_NUMBER = r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?"
_ODD_TOKEN = rf"[ \t]*(?=[-+.0-9])(?!{_PLAIN_NUMBER}(?![^\s,\[\]{{}}#]))({_NUMBER_TOKEN}){_NUMBER_END}"
# after a line break, one of ``:,[{?``, or a dash with a space or line start before it and a blank after (one
# class first: the regex engine skips ahead to its characters instead of trying every position)
_ODD_NUMBER = re.compile(r"[-:,\[{?\n](?<!\S-)(?:(?<=-)(?=[ \t])|(?<!-))" + _ODD_TOKEN, re.M)
_ODD_NUMBER_FIRST = re.compile(_ODD_TOKEN, re.M)  # ... or at the very start of the text
_ITEMS_KEY = re.compile(r"^items:[ \t]*(?:#.*)?$", re.M)
SLICE_ITEMS = 2000  # items parsed at a time in the usual layout
_ONE_LINE_ITEMS = re.compile(r"\n( *)- +[{\"'][^\n]*(?:\n\1- +[{\"'][^\n]*)*")
_RESOLVERS = Resolver.yaml_implicit_resolvers
_RESOLVABLE_FIRST = frozenset(c for c, found in _RESOLVERS.items() if any(tag != STR for tag, _ in found))
_KEYS: dict[str, str] = {}  # keys vouched for (none resolves when plain), each one shared object


def _resolves_plain(s: str) -> bool:
    """Whether PyYAML would read ``s`` as something other than a string had it been written plain.

    yaml-rs gives a string for a quoted scalar and for a plain one it does not resolve (``yes``,
    ``2024-01-01``, ``1:30``, ``<<``); PyYAML resolves the latter, so such strings are ambiguous.
    An empty string cannot have been plain (plain empty is null), so it is not.
    """
    if not s:
        return False
    for tag, regexp in _RESOLVERS.get(s[0], ()):
        if tag != STR and regexp.match(s):
            return True
    return False


def _text_is_plain(text: str) -> bool:
    """Whether yaml-rs's reading of ``text`` can be vouched for (a few substring scans first: each
    is a fraction of a regex search over a large manifest)."""
    if any(c in text for c in _ODD_BREAK_CHARS) or "\t" in text or _NON_PRINTABLE.search(text):
        return False
    if any(c in text for c in _SPECIAL_CHARS) and _SPECIAL.search(text):
        return False
    if text.startswith("%") or "\n%" in text or _SURROGATE_ESCAPE.search(text):
        return False
    return _ODD_NUMBER.search(text) is None and _ODD_NUMBER_FIRST.match(text) is None


def _node(v: Any) -> yaml.Node:
    """A light node for a parsed value, typed as PyYAML would type the same text."""
    t = type(v)
    if t is str:
        if _resolves_plain(v):
            raise Fallback
        return yaml.ScalarNode(STR, v, _NOWHERE, _NOWHERE)
    if t is dict:
        pairs = []
        for k, x in v.items():
            if type(k) is not str or _resolves_plain(k):
                raise Fallback
            pairs.append((yaml.ScalarNode(STR, k, _NOWHERE, _NOWHERE), _node(x)))
        return yaml.MappingNode(MAP, pairs, _NOWHERE, _NOWHERE)
    if t is list:
        return yaml.SequenceNode(SEQ, [_node(x) for x in v], _NOWHERE, _NOWHERE)
    if t is bool:
        return yaml.ScalarNode(BOOL, v, _NOWHERE, _NOWHERE)
    if t is int:
        return yaml.ScalarNode(INT, v, _NOWHERE, _NOWHERE)
    if t is float:
        if not math.isfinite(v):
            raise Fallback
        return yaml.ScalarNode(FLOAT, v, _NOWHERE, _NOWHERE)
    if v is None:
        return yaml.ScalarNode(NULL, None, _NOWHERE, _NOWHERE)
    raise Fallback


def _item_lines(text: str, items: list[Any]) -> list[int] | None:
    """1-based line of each item of the top-level block list ``items:``, where PyYAML's node starts.

    Found from the text (yaml-rs keeps no positions): every ``- `` at the list's indentation. Each
    is checked against the parsed item it should start, and None says the text is laid out in a
    way this does not follow (flow list, item starting on a later line, ...).
    """
    m = _items_key(text)
    if m is None:
        return None
    first = text.count("\n", 0, m.start()) + 1  # line number of "items:"
    out: list[int] = []
    indent = -1
    lines = text[m.end() :].split("\n")
    for j, ln in enumerate(lines[1:], start=first + 1):
        body = ln.lstrip(" ")
        if not body or body[0] == "#":
            continue
        ind = len(ln) - len(body)
        if indent < 0:
            indent = ind
        if ind > indent:
            continue
        if ind < indent or not (body.startswith("- ") or body == "-"):
            if ind == 0 and not body.startswith("-"):
                break  # the next top-level key
            return None
        rest = body[1:].lstrip(" ")
        if not rest or rest[0] == "#":
            return None  # the item's node starts on a later line
        if len(out) >= len(items) or not _starts(rest, items[len(out)]):
            return None
        out.append(j)
    return out if len(out) == len(items) else None


def _items_key(text: str) -> re.Match[str] | None:
    """The one ``items:`` line (the substring count spares a regex scan of the whole text)."""
    m = _ITEMS_KEY.search(text)
    if m is None or (text.count("items:") > 1 and len(_ITEMS_KEY.findall(text)) != 1):
        return None
    return m


def _one_line_items(text: str) -> tuple[int, int, int, int, int] | None:
    """The usual layout of ``items``, found by one match: one line per item, each a flow mapping or
    a quoted string (so each line begins its item, as ``_starts`` checks), then the end of the
    file or the next top-level key. (Where ``items:`` starts, where its first item starts, where
    the last one ends, the first item's line, how many); None for any other layout."""
    m = _items_key(text)
    if m is None:
        return None
    run = _ONE_LINE_ITEMS.match(text, m.end())
    if run is None:
        return None
    after = text[run.end() : run.end() + 2]
    if not (after in ("", "\n") or (after[0] == "\n" and after[1] not in " -#\n")):
        return None
    first = text.count("\n", 0, m.start()) + 2
    return m.start(), run.start() + 1, run.end(), first, text.count("\n", run.start(), run.end())


def _starts(rest: str, item: Any) -> bool:
    """Whether the text after an item's dash plausibly begins that parsed item."""
    if rest[0] in "\"'":
        return True
    if isinstance(item, dict):
        first = next(iter(item), None)
        # A key that is not a string (``1: x``) is a mistake: any answer leads to PyYAML's report.
        return rest[0] == "{" or (isinstance(first, str) and rest.startswith(first))
    if isinstance(item, str):
        return rest[0] in "|>" or (bool(item) and rest[0] == item[0])
    return True


class PlainItems(yaml.SequenceNode):
    """The ``items`` list as yaml-rs gives it, with each item's line: checked as plain values.

    No node is made for an item (that cost more than parsing): ``plain_item`` vouches for its
    values and the loader gives them to the validator as they are. Any mistake falls back to
    PyYAML's nodes, which say where it is, so the lines here are only what a valid item records.
    ``values`` yields each item once, in order (parsed a slice of the file at a time, where the
    layout allows: see ``fast_root``); the node's own value has one entry per item.
    """

    def __init__(self, values: Iterator[Any], lines: list[int]) -> None:
        super().__init__(SEQ, lines, _NOWHERE, _NOWHERE)
        self.values = values
        self.lines = lines


def plain_item(v: Any) -> tuple[dict[str, Any], int]:
    """(values, expanded size) of one parsed item, as ``loader._item`` reads its node; Fallback for
    anything it would refuse or PyYAML might read otherwise. The size counts the item and each value
    of its parameters, nested ones too (not those of ``id``, ``matrix``, ``variants``, ``id_template``)."""
    t = type(v)
    if t is str:
        if _resolves_plain(v):
            raise Fallback
        return {"prompt": v}, 2
    if t is not dict:
        raise Fallback  # a number, a list, null: a mistake in the item, reported by PyYAML's reading
    size = 1
    values = {}  # the same, keyed by shared key strings: yaml-rs makes new ones for every item
    keys = _KEYS
    try:
        for k, x in v.items():
            key = keys.get(k) if type(k) is str else None
            if key is None:  # a key not met before: vouch for it once
                if type(k) is not str or _resolves_plain(k):
                    raise Fallback
                key = intern(k)
                if len(keys) < 1024:
                    keys[key] = key
            t = type(x)
            if t is str:  # the usual values first, then any other through plain_size
                if x and x[0] in _RESOLVABLE_FIRST and _resolves_plain(x):
                    raise Fallback
                n = 1
            elif t is int or t is bool or x is None:
                n = 1
            else:
                n = plain_size(x)
            if key != "id" and key not in ENTRY_KEYS:
                size += n
            values[key] = x
    except RecursionError:
        raise Fallback from None
    return values, size


def plain_size(v: Any) -> int:
    """Values in ``v`` (itself included), as ``Converter.value`` counts them; Fallback as ``_node``."""
    t = type(v)
    if t is str:
        if _resolves_plain(v):
            raise Fallback
        return 1
    if t is int or t is bool or v is None:
        return 1
    if t is float:
        if not math.isfinite(v):
            raise Fallback
        return 1
    if t is dict:
        n = 1
        for k, x in v.items():
            if type(k) is not str or _resolves_plain(k):
                raise Fallback
            n += plain_size(x)
        return n
    if t is list:
        n = 1
        for x in v:
            n += plain_size(x)
        return n
    raise Fallback


class At:
    """Where the loader's check of plain items is: the item being checked and its line."""

    __slots__ = ("path", "index", "line")

    def __init__(self, path: str) -> None:
        self.path, self.index, self.line = path, 0, 0

    def locate(self, _field: str) -> tuple[str, int]:
        return self.path, self.line


class AtOrigin(Origin):
    """``Origin(f"items[{index}]", ...)`` of the item an ``At`` is at: valid while that item is checked."""

    @property
    def prefix(self) -> str:  # type: ignore[override]
        return f"items[{self.locate.__self__.index}]"  # type: ignore[attr-defined]


def cursor(path: str) -> tuple[At, Origin]:
    """A place to move from item to item, and the one ``Origin`` of whichever item it is at."""
    return (at := At(path)), AtOrigin("", at.locate, YAML)


class FastConverter(Converter):
    """Scalars of light nodes already hold their Python value; only the type check is left."""

    def scalar(self, node: yaml.ScalarNode, fieldpath: str | None) -> Any:
        if node.tag in (STR, INT, FLOAT, BOOL, NULL):
            return node.value
        raise self.unsupported(node, fieldpath)


def _loads(text: str) -> Any:
    try:
        return yaml_rs.loads(text, parse_datetime=False, duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error)
    except Exception:  # any refusal, whatever its type: PyYAML will say what is wrong
        raise Fallback from None


def fast_root(text: str) -> yaml.MappingNode:
    """The manifest's top level as light nodes, its items as ``PlainItems``; Fallback when not vouched for.

    In the usual layout (``_one_line_items``: one line per item) the items are parsed a slice at
    a time as they are checked, and the rest of the file with ``items: []`` in their place: a
    100k-item file is never held as one parsed list, nor as the parser's own tree of it (which
    the allocator keeps for the rest of the run once freed).
    """
    if yaml_rs is None or not _text_is_plain(text):
        raise Fallback
    block = _one_line_items(text)
    if block is not None:
        key_at, start, end, first_line, n = block
        data = _loads(text[:key_at] + "items: []" + text[end:])
        if type(data) is not dict or type(data.get("items")) is not list or data["items"]:
            raise Fallback
        items: yaml.Node = PlainItems(_slices(text, start, end, n), list(range(first_line, first_line + n)))
    else:
        data = _loads(text)
        if type(data) is not dict:
            raise Fallback
    pairs = []
    for k, v in data.items():
        if type(k) is not str or _resolves_plain(k):
            raise Fallback
        if k == "items" and block is not None:
            node = items
        elif k == "items" and type(v) is list and v:
            lines = _item_lines(text, v)
            if lines is None:
                raise Fallback
            node = PlainItems(_drained(v), lines)
        else:
            node = _node(v)
        pairs.append((yaml.ScalarNode(STR, k, _NOWHERE, _NOWHERE), node))
    return yaml.MappingNode(MAP, pairs, _NOWHERE, _NOWHERE)


def _drained(values: list[Any]) -> Iterator[Any]:
    """Each value once, its place in the list cleared (it lives on in the item's parameters, if anywhere)."""
    for i, v in enumerate(values):
        values[i] = None
        yield v


def _slices(text: str, start: int, end: int, n: int) -> Iterator[Any]:
    """The ``n`` one-line items of ``text[start:end]``, parsed SLICE_ITEMS lines at a time; Fallback
    unless each slice reads as a list of exactly its lines' items (so line k holds item k)."""
    pos = start
    while n:
        k = min(SLICE_ITEMS, n)
        stop = pos
        for _ in range(k):
            stop = text.find("\n", stop, end) + 1 or end
        parsed = _loads(text[pos:stop])
        if type(parsed) is not list or len(parsed) != k:
            raise Fallback
        yield from _drained(parsed)
        pos, n = stop, n - k
