"""YAML manifest → validated, frozen items.

Everything a user can get wrong in a manifest is reported here, with file, line and field, before
any request costs money. The loader composes the YAML into nodes and converts them itself instead
of calling ``yaml.safe_load``: only then does every value keep the line it came from, and only then
can aliases be bounded (an alias bomb is cheap to compose but huge to expand).

Paths: ``output`` is kept as written; a relative path is relative to the current working directory
of the process (not to the manifest's folder), so ``batchgen run jobs/x.yaml`` from the project
root writes to ``./out/x``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .models import ModelSpec, Param, Problem, check_param, get_model, validate_params

__all__ = [
    "DEFAULT_MODEL",
    "MAX_MANIFEST_BYTES",
    "Item",
    "Limits",
    "Manifest",
    "ManifestError",
    "canonical_json",
    "check_safe_name",
    "derive_id",
    "load_manifest",
    "loads_manifest",
]

DEFAULT_MODEL = "ideogram-txt-2-img"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# Expanded size (values, an alias counted each time it is used) allowed for all items together.
# Without aliases this is about the value count, which a 64 MiB file cannot push much past this;
# with them it stops an alias bomb before hashing and serialising the items expands it.
MAX_EXPANDED_NODES = 20_000_000
# An item's parameters are serialised (hashing, the POST body) once per item; bound that work.
MAX_ITEM_NODES = 10_000

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ = _TAG + "map", _TAG + "seq"
_PLAIN_TAGS = frozenset((_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ))

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_SLUG_DROP = re.compile(r"[^a-z0-9]+")

_TOP_KEYS = ("name", "model", "output", "defaults", "items", "limits", "price_usd")
_LIMIT_KEYS = ("concurrency", "rpm", "max_cost_usd", "max_images")


class ManifestError(Exception):
    """A user mistake in a manifest; ``str()`` is the one line the CLI prints (exit code 2)."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = self.message if not self.field else f"{self.field}: {self.message}"
        return f"{where}: {what}"


@dataclass(frozen=True)
class Item:
    id: str
    params: Mapping[str, Any]  # the exact JSON body to POST: defaults merged under the item's values
    index: int  # 0-based position in the manifest
    line: int  # 1-based line of the item in the file


@dataclass(frozen=True)
class Limits:
    concurrency: int | None = None
    rpm: float | None = None
    max_cost_usd: float | None = None
    max_images: int | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    model: str
    output: Path  # as written, or out/<name>; relative to the current directory
    items: tuple[Item, ...]
    limits: Limits
    price_usd: float | None  # the manifest's override of the model's listed price, if any
    warnings: tuple[str, ...] = field(default=())

    @property
    def price_per_image_usd(self) -> float | None:
        """Override first, then the model table; None when neither knows (unknown slug)."""
        if self.price_usd is not None:
            return self.price_usd
        spec = get_model(self.model)
        return spec.price_usd if spec is not None else None


# ----------------------------------------------------------------------------- names and ids


def check_safe_name(value: str) -> str | None:
    """Why ``value`` is unsafe as a file or folder name on any common OS, or None when it is safe.

    Ids become file names and the name a folder, so anything that could escape the output folder,
    hide a file or trip Windows is refused up front rather than failing halfway through a run.
    """
    if not _SAFE_NAME.match(value):
        return (
            "must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (no slashes, spaces or leading dot), got {value!r}"
        )
    if value.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        return f"{value!r} is a reserved file name on Windows"
    return None


def _slug(text: str) -> str:
    s = _SLUG_DROP.sub("-", text.lower()).strip("-")[:40].strip("-")
    return s or "item"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(params: Mapping[str, Any]) -> str:
    return _CANONICAL.encode(dict(params))


def derive_id(params: Mapping[str, Any]) -> str:
    """Id from content, not position: inserting prompts must not rename (and so resubmit) others."""
    prompt = params.get("prompt")
    slug = _slug(prompt if isinstance(prompt, str) else "")
    digest = hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


# ----------------------------------------------------------------------------- node conversion


class _Converter:
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
            return (node.value if node.tag == _STR else self.scalar(node, fieldpath)), 1
        key = id(node)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if key in self.in_progress:
            raise self.error(node, fieldpath, "recursive YAML alias")
        tag = node.tag
        if isinstance(node, yaml.MappingNode) and tag == _MAP:
            self.in_progress.add(key)
            d: dict[str, Any] = {}
            size = 1
            for k, _, v in self.pairs(node, fieldpath):
                d[k], n = self.value(v, _join(fieldpath, k))
                size += n
            self.in_progress.discard(key)
            result: tuple[Any, int] = (d, size)
        elif isinstance(node, yaml.SequenceNode) and tag == _SEQ:
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
        if node.tag not in _PLAIN_TAGS:
            raise self.unsupported(node, fieldpath)

    def unsupported(self, node: yaml.Node, fieldpath: str | None) -> ManifestError:
        tag = node.tag
        short = tag[len(_TAG) :] if tag.startswith(_TAG) else tag
        hint = "; quote it to make it a string" if isinstance(node, yaml.ScalarNode) else ""
        return self.error(node, fieldpath, f"unsupported YAML type {short!r}{hint}")

    def scalar(self, node: yaml.ScalarNode, fieldpath: str | None) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        c = self.constructor
        if tag == _INT:
            return c.construct_yaml_int(node)
        if tag == _FLOAT:
            v = c.construct_yaml_float(node)
            if not math.isfinite(v):
                raise self.error(node, fieldpath, f"must be a finite number, got {node.value!r}")
            return v
        if tag == _BOOL:
            return c.construct_yaml_bool(node)
        if tag == _NULL:
            return None
        raise self.unsupported(node, fieldpath)

    def key(self, node: yaml.Node, fieldpath: str | None) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, fieldpath, "keys must be plain strings")
        if node.tag == _TAG + "merge":
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
            if knode.__class__ is yaml.ScalarNode and knode.tag == _STR:
                k = knode.value
            else:
                k = self.key(knode, fieldpath)
            if k in seen:
                raise self.error(knode, _join(fieldpath, k), f"duplicate key (first set on line {seen[k]})")
            seen[k] = knode.start_mark.line + 1
            out.append((k, knode, vnode))
        return out


def _join(base: str | None, key: str) -> str:
    return f"{base}.{key}" if base else key


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _blame_line(key_node: yaml.Node, node: yaml.Node, subpath: str) -> int:
    """Line to blame for the value at ``subpath`` (e.g. ``members[1].color_hex``) under ``node``.

    A scalar's own line; for a mapping or list, the line of the key that introduced it, since a
    block collection starts on the line after its key and that key is what the user will look for.
    """
    line = _line(key_node)
    for name, index in _PATH_PART.findall(subpath):
        nxt = None
        if name and isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == name:
                    line, nxt = _line(k), v
                    break
        elif index and isinstance(node, yaml.SequenceNode):
            i = int(index)
            if i < len(node.value):
                nxt = node.value[i]
                line = _line(nxt)
        if nxt is None:
            break
        node = nxt
    return _line(node) if isinstance(node, yaml.ScalarNode) else line


# ----------------------------------------------------------------------------- the loader


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; every failure is a one-line ManifestError."""
    shown = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                shown, None, None, f"file is too large ({size} bytes, limit {MAX_MANIFEST_BYTES})"
            )
        data = p.read_bytes()
    except ManifestError:
        raise
    except FileNotFoundError:
        raise ManifestError(shown, None, None, "no such file") from None
    except IsADirectoryError:
        raise ManifestError(shown, None, None, "is a directory, not a manifest file") from None
    except OSError as e:
        raise ManifestError(shown, None, None, f"cannot read: {e.strerror or e}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(shown, None, None, f"file is too large (limit {MAX_MANIFEST_BYTES} bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ManifestError(shown, line, None, f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    return _load(text, shown, p)


def loads_manifest(text: str, path: str = "<string>") -> Manifest:
    """Validate manifest text; ``path`` is only used in messages and for the default name."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(path, None, None, f"manifest is too large (limit {MAX_MANIFEST_BYTES} bytes)")
    return _load(text, path, Path(path))


def _compose(text: str, shown: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
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


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _default_name(stem: str) -> str:
    if check_safe_name(stem) is None:
        return stem
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:100]
    return s if s and check_safe_name(s) is None else "manifest"


def _number(
    conv: _Converter, node: yaml.Node, fieldpath: str, *, integer: bool, low: float, low_open: bool
) -> Any:
    v, _ = conv.value(node, fieldpath)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise conv.error(node, fieldpath, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
    if v < low or (low_open and v == low):
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        raise conv.error(node, fieldpath, f"must be {bound}, got {v!r}")
    return v


def _string(conv: _Converter, node: yaml.Node, fieldpath: str) -> str:
    v, _ = conv.value(node, fieldpath)
    if not isinstance(v, str) or not v.strip():
        raise conv.error(node, fieldpath, f"must be a non-empty string, got {v!r}")
    return v


def _passthrough_spec(slug: str) -> ModelSpec:
    """The one rule that holds for any model: a prompt. Expressed as a table so models.py checks it."""
    return ModelSpec(
        slug=slug, params=(Param("prompt", "string", required=True),), price_usd=0.0, typical_latency_s=0.0
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Composing allocates a few objects per value and none of them is garbage yet.

    Left on, the cyclic collector rescans the growing tree again and again: about a third of the
    load time of a 10,000-item manifest. Loading happens once, before the run starts.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load(text: str, shown: str, path: Path) -> Manifest:
    with _gc_paused():
        return _load_unpaused(text, shown, path)


def _load_unpaused(text: str, shown: str, path: Path) -> Manifest:
    root = _compose(text, shown)
    if root is None:
        raise ManifestError(shown, None, None, "manifest is empty")
    conv = _Converter(shown)
    conv.check_tag(root, None)
    if not isinstance(root, yaml.MappingNode) or root.tag != _MAP:
        raise conv.error(
            root, None, "the top level must be a mapping with 'items' (and optionally name, model, ...)"
        )

    top: dict[str, yaml.Node] = {}
    for k, knode, v in conv.pairs(root, None):
        if k not in _TOP_KEYS:
            raise conv.error(knode, k, f"unknown key (allowed: {', '.join(_TOP_KEYS)})")
        top[k] = v

    # name / model / output / price_usd
    if "name" in top:
        name = _string(conv, top["name"], "name")
        why = check_safe_name(name)
        if why:
            raise conv.error(top["name"], "name", f"must be safe as a folder name: {why}")
    else:
        name = _default_name(path.stem)
    model = _string(conv, top["model"], "model") if "model" in top else DEFAULT_MODEL
    output = Path(_string(conv, top["output"], "output")) if "output" in top else Path("out") / name
    price = None
    if "price_usd" in top:
        price = _number(conv, top["price_usd"], "price_usd", integer=False, low=0, low_open=True)
        price = None if price is None else float(price)

    limits = _limits(conv, top.get("limits"))

    warnings: list[str] = []
    spec = get_model(model)
    if spec is None:
        warnings.append(f"unknown model {model!r}: parameters are passed through unvalidated")
        checker = _passthrough_spec(model)
    else:
        checker = spec

    # defaults
    defaults: dict[str, Any] = {}
    default_nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    if "defaults" in top and not (
        isinstance(top["defaults"], yaml.ScalarNode) and top["defaults"].tag == _NULL
    ):
        dnode = top["defaults"]
        conv.check_tag(dnode, "defaults")
        if not isinstance(dnode, yaml.MappingNode):
            raise conv.error(dnode, "defaults", "must be a mapping of model parameters")
        for k, knode, v in conv.pairs(dnode, "defaults"):
            if k == "id":
                raise conv.error(v, "defaults.id", "ids are per item and cannot be set in defaults")
            defaults[k], _ = conv.value(v, f"defaults.{k}")
            default_nodes[k] = (knode, v)
            if spec is not None or k == "prompt":
                problems = check_param(checker, k, defaults[k])
                if problems:
                    raise _problem_error(conv, problems[0], knode, v, k, "defaults")

    # items
    inode = top.get("items")
    if inode is None:
        raise ManifestError(shown, None, "items", "missing: the manifest needs a non-empty list of items")
    conv.check_tag(inode, "items")
    if not isinstance(inode, yaml.SequenceNode) or inode.tag != _SEQ:
        raise conv.error(
            inode, "items", "must be a list of items (mappings with a prompt, or prompt strings)"
        )
    if not inode.value:
        raise conv.error(inode, "items", "must not be empty")

    items: list[tuple[str | None, dict[str, Any], int]] = []
    explicit: dict[str, tuple[str, int]] = {}  # casefolded id -> (id, line)
    for index, node in enumerate(inode.value):
        items.append(_item(conv, checker, spec is not None, node, index, defaults, default_nodes, explicit))

    # Derived ids avoid explicit ids and earlier ids, so no id can collide whatever the order.
    taken = set(explicit)
    built: list[Item] = []
    for index, (item_id, params, line) in enumerate(items):
        if item_id is None:
            base = derive_id(params)
            item_id, n = base, 1
            while item_id.casefold() in taken:
                n += 1
                item_id = f"{base}-{n}"
            taken.add(item_id.casefold())
        built.append(Item(id=item_id, params=types.MappingProxyType(params), index=index, line=line))

    return Manifest(
        path=path,
        name=name,
        model=model,
        output=output,
        items=tuple(built),
        limits=limits,
        price_usd=price,
        warnings=tuple(warnings),
    )


def _limits(conv: _Converter, node: yaml.Node | None) -> Limits:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
        return Limits()
    conv.check_tag(node, "limits")
    if not isinstance(node, yaml.MappingNode):
        raise conv.error(node, "limits", f"must be a mapping with any of {', '.join(_LIMIT_KEYS)}")
    values: dict[str, Any] = {}
    for k, knode, v in conv.pairs(node, "limits"):
        f = f"limits.{k}"
        if k == "concurrency":
            values[k] = _number(conv, v, f, integer=True, low=1, low_open=False)
        elif k == "rpm":
            r = _number(conv, v, f, integer=False, low=0, low_open=True)
            values[k] = None if r is None else float(r)
        elif k == "max_cost_usd":
            c = _number(conv, v, f, integer=False, low=0, low_open=False)
            values[k] = None if c is None else float(c)
        elif k == "max_images":
            values[k] = _number(conv, v, f, integer=True, low=0, low_open=False)
        else:
            raise conv.error(knode, f, f"unknown key (allowed: {', '.join(_LIMIT_KEYS)})")
    return Limits(**values)


def _problem_error(
    conv: _Converter, problem: Problem, key_node: yaml.Node, value_node: yaml.Node, key: str, prefix: str
) -> ManifestError:
    sub = problem.field[len(key) :] if problem.field.startswith(key) else ""
    line = _blame_line(key_node, value_node, sub)
    return ManifestError(conv.path, line, f"{prefix}.{problem.field}", problem.message)


def _item(
    conv: _Converter,
    checker: ModelSpec,
    known: bool,
    node: yaml.Node,
    index: int,
    defaults: dict[str, Any],
    default_nodes: dict[str, tuple[yaml.Node, yaml.Node]],
    explicit: dict[str, tuple[str, int]],
) -> tuple[str | None, dict[str, Any], int]:
    where = f"items[{index}]"
    line = _line(node)
    own: dict[str, Any] = {}
    own_nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    item_id: str | None = None
    conv.check_tag(node, where)
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
        own["prompt"] = node.value
        own_nodes["prompt"] = (node, node)
    elif isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        for k, knode, v in conv.pairs(node, where):
            if k == "id":
                item_id = _explicit_id(conv, v, f"{where}.id", explicit)
                continue
            own[k], _ = conv.value(v, f"{where}.{k}")
            own_nodes[k] = (knode, v)
    else:
        hint = (
            " (quote a prompt that YAML reads as a number, boolean or null)"
            if isinstance(node, yaml.ScalarNode)
            else ""
        )
        raise conv.error(node, where, f"must be a mapping of parameters or a prompt string{hint}")

    params = {**defaults, **own}
    memo = conv.memo
    size = 1 + sum(memo[id(n)][1] if id(n) in memo else 1 for _, n in own_nodes.values())
    size += sum(memo[id(n)][1] if id(n) in memo else 1 for k, (_, n) in default_nodes.items() if k not in own)
    if size > MAX_ITEM_NODES:
        raise conv.error(node, where, f"parameters are too large ({size} values once aliases are expanded)")
    conv.total += size
    if conv.total > MAX_EXPANDED_NODES:
        raise conv.error(node, where, "the manifest is too large once YAML aliases are expanded")

    if known:
        problems = validate_params(checker, params)
    else:
        problems = validate_params(checker, {"prompt": params["prompt"]} if "prompt" in params else {})
    if problems:
        p = problems[0]
        key = _PATH_PART.match(p.field)
        top_key = key.group(1) if key else p.field
        if top_key in own_nodes:
            raise _problem_error(conv, p, *own_nodes[top_key], top_key, where)
        if top_key in default_nodes:
            raise _problem_error(conv, p, *default_nodes[top_key], top_key, "defaults")
        raise ManifestError(conv.path, line, f"{where}.{p.field}", p.message)
    return item_id, params, line


def _explicit_id(
    conv: _Converter, node: yaml.Node, fieldpath: str, explicit: dict[str, tuple[str, int]]
) -> str:
    v, _ = conv.value(node, fieldpath)
    if not isinstance(v, str):
        raise conv.error(node, fieldpath, f"must be a string, got {v!r} (quote it)")
    why = check_safe_name(v)
    if why:
        raise conv.error(node, fieldpath, f"not safe as a file name: {why}")
    folded = v.casefold()
    if folded in explicit:
        first, first_line = explicit[folded]
        raise conv.error(
            node,
            fieldpath,
            f"duplicate id {v!r}: already used by {first!r} on line {first_line} (ids are case-insensitive)",
        )
    explicit[folded] = (v, _line(node))
    return v
