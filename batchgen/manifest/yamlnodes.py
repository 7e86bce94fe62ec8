"""The YAML node layer of the manifest loader: positions, types and alias bounds.

``yaml.safe_load`` would lose the line every value came from and expand aliases blindly; composing
nodes and converting them here keeps both, so every manifest mistake can be reported as
``file:line: field: message`` and an alias bomb is measured before anything expands it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import yaml

from .types import ManifestError
from .validate import number_problem, text_problems

__all__ = [
    "MAX_EXPANDED_NODES",
    "MAX_ITEM_NODES",
    "Converter",
    "ManifestError",
    "blame_line",
    "compose",
    "is_null",
    "join_path",
    "line_of",
    "locator",
    "number",
    "optional",
    "string",
    "PATH_PART",
]

# Expanded size (values, an alias counted each time it is used) allowed for all items together.
# Without aliases this is about the value count, which a 64 MiB file cannot push much past this;
# with them it stops an alias bomb before hashing and serialising the items expands it.
MAX_EXPANDED_NODES = 20_000_000
# An item's parameters are serialised (hashing, the POST body) once per item; bound that work.
MAX_ITEM_NODES = 10_000

TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (TAG + t for t in ("str", "int", "float", "bool", "null"))
MAP, SEQ = TAG + "map", TAG + "seq"
PLAIN_TAGS = frozenset((STR, INT, FLOAT, BOOL, NULL, MAP, SEQ))

Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Converter:
    """Nodes → plain Python values (str/int/float/bool/None/dict/list) typed as SafeLoader would.

    Values are memoised per node so an aliased node is converted once and shared, as SafeLoader
    does; its expanded size is memoised too, so bombs are measured without being expanded.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.constructor = yaml.constructor.SafeConstructor()
        self.memo: dict[int, tuple[Any, int]] = {}
        self.in_progress: set[int] = set()
        self.total = 0  # expanded size of the items so far

    def error(self, node: yaml.Node, fieldpath: str | None, message: str) -> ManifestError:
        return ManifestError(self.path, node.start_mark.line + 1, fieldpath, message)

    def value(self, node: yaml.Node, fieldpath: str) -> tuple[Any, int]:
        """(value, expanded node count) of ``node``."""
        if node.__class__ is yaml.ScalarNode:  # the hot path: no memo, scalars are cheap to redo
            return (node.value if node.tag == STR else self.scalar(node, fieldpath)), 1
        key = id(node)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if key in self.in_progress:
            raise self.error(node, fieldpath, "recursive YAML alias")
        tag = node.tag
        if isinstance(node, yaml.MappingNode) and tag == MAP:
            self.in_progress.add(key)
            d: dict[str, Any] = {}
            size = 1
            for k, _, v in self.pairs(node, fieldpath):
                d[k], n = self.value(v, join_path(fieldpath, k))
                size += n
            self.in_progress.discard(key)
            result: tuple[Any, int] = (d, size)
        elif isinstance(node, yaml.SequenceNode) and tag == SEQ:
            self.in_progress.add(key)
            out: list[Any] = []
            size = 1
            for i, child in enumerate(node.value):
                v, n = self.value(child, f"{fieldpath}[{i}]")
                out.append(v)
                size += n
            self.in_progress.discard(key)
            result = (out, size)
        else:
            raise self.unsupported(node, fieldpath)
        if result[1] > MAX_EXPANDED_NODES:
            raise self.error(node, fieldpath, "too large once YAML aliases are expanded")
        self.memo[key] = result
        return result

    def check_tag(self, node: yaml.Node, fieldpath: str | None) -> None:
        """Refuse explicit tags (``!!python/...``, ``!!set``) before judging a node's shape."""
        if node.tag not in PLAIN_TAGS:
            raise self.unsupported(node, fieldpath)

    def unsupported(self, node: yaml.Node, fieldpath: str | None) -> ManifestError:
        tag = node.tag
        short = tag[len(TAG) :] if tag.startswith(TAG) else tag
        hint = "; quote it to make it a string" if isinstance(node, yaml.ScalarNode) else ""
        return self.error(node, fieldpath, f"unsupported YAML type {short!r}{hint}")

    def scalar(self, node: yaml.ScalarNode, fieldpath: str | None) -> Any:
        tag = node.tag
        if tag == STR:
            return node.value
        c = self.constructor
        if tag == INT:
            return c.construct_yaml_int(node)
        if tag == FLOAT:
            v = c.construct_yaml_float(node)
            if not math.isfinite(v):
                raise self.error(node, fieldpath, f"must be a finite number, got {node.value!r}")
            return v
        if tag == BOOL:
            return c.construct_yaml_bool(node)
        if tag == NULL:
            return None
        raise self.unsupported(node, fieldpath)

    def key(self, node: yaml.Node, fieldpath: str | None) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, fieldpath, "keys must be plain strings")
        if node.tag == TAG + "merge":
            raise self.error(node, fieldpath, "YAML merge keys ('<<') are not supported; use 'defaults'")
        k = self.scalar(node, fieldpath)
        if not isinstance(k, str):
            raise self.error(node, fieldpath, f"keys must be strings, got {k!r} (quote it)")
        return k

    def pairs(self, node: yaml.MappingNode, fieldpath: str | None) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Keys converted and checked for duplicates (SafeLoader would silently keep the last)."""
        seen: dict[str, int] = {}
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        for knode, vnode in node.value:
            if knode.__class__ is yaml.ScalarNode and knode.tag == STR:
                k = knode.value
            else:
                k = self.key(knode, fieldpath)
            if k in seen:
                raise self.error(knode, join_path(fieldpath, k), f"duplicate key (first set on line {seen[k]})")
            seen[k] = knode.start_mark.line + 1
            out.append((k, knode, vnode))
        return out


def join_path(base: str | None, key: str) -> str:
    return f"{base}.{key}" if base else key


PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def blame_line(key_node: yaml.Node, node: yaml.Node, subpath: str) -> int:
    """Line to blame for the value at ``subpath`` (e.g. ``members[1].color_hex``) under ``node``.

    A scalar's own line; for a mapping or list, the line of the key that introduced it, since a
    block collection starts on the line after its key and that key is what the user will look for.
    """
    line = line_of(key_node)
    parts = PATH_PART.findall(subpath) if "." in subpath or "[" in subpath else ((subpath, ""),)
    for name, index in parts:
        nxt = None
        if name and isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == name:
                    line, nxt = line_of(k), v
                    break
        elif index and isinstance(node, yaml.SequenceNode):
            i = int(index)
            if i < len(node.value):
                nxt = node.value[i]
                line = line_of(nxt)
        if nxt is None:
            break
        node = nxt
    return line_of(node) if isinstance(node, yaml.ScalarNode) else line


def locator(path: str, node: yaml.Node) -> Callable[[str], tuple[str, int]]:
    """``locate(field)`` for the validator: the line ``blame_line`` finds for ``field`` under ``node``.

    A field that is not there (a required parameter left out) is blamed on ``node``'s own line.
    """
    return lambda field: (path, blame_line(node, node, field))


def compose(text: str, shown: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "invalid YAML"
        raise ManifestError(shown, line, None, f"YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1 if isinstance(e.position, int) else None
        raise ManifestError(
            shown,
            line,
            None,
            f"YAML syntax error: unacceptable character {chr(e.character)!r}"
            if isinstance(e.character, int)
            else f"YAML syntax error: {e.reason}",
        ) from None
    except yaml.YAMLError as e:
        raise ManifestError(shown, None, None, f"YAML syntax error: {e}") from None


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


# ---- the manifest's simple top-level values: their checks, blamed on their node


def is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL)


def number(
    conv: Converter, node: yaml.Node, fieldpath: str, *, integer: bool, low: float, low_open: bool
) -> Any:
    v, _ = conv.value(node, fieldpath)
    if v is None:
        return None
    why = number_problem(v, integer=integer, low=low, low_open=low_open)
    if why:
        raise conv.error(node, fieldpath, why)
    return v


def string(conv: Converter, node: yaml.Node, fieldpath: str) -> str:
    v, _ = conv.value(node, fieldpath)
    if not isinstance(v, str) or not v.strip():
        raise conv.error(node, fieldpath, f"must be a non-empty string, got {v!r}")
    for p in text_problems(fieldpath, v):
        raise conv.error(node, fieldpath, p.message)
    return v


def optional(conv: Converter, node: yaml.Node | None, fieldpath: str) -> Any:
    return None if node is None else conv.value(node, fieldpath)[0]
