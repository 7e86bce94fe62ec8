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
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from batchgen.core.fastjson import canonical_json
from batchgen.models import ModelSpec, Param, Problem, check_param, get_model, validate_params

from . import expand as X
from . import fast
from .promptfiles import read_rows
from .yamlnodes import (
    MAP,
    MAX_EXPANDED_NODES,
    MAX_ITEM_NODES,
    NULL,
    PATH_PART,
    SEQ,
    STR,
    Converter,
    ManifestError,
    blame_line,
    compose,
    line_of,
)

__all__ = [
    "DEFAULT_MODEL",
    "MAX_MANIFEST_BYTES",
    "Item",
    "Limits",
    "Manifest",
    "ManifestError",
    "check_safe_name",
    "derive_id",
    "load_manifest",
    "loads_manifest",
]

DEFAULT_MODEL = "ideogram-txt-2-img"
# A YAML tree costs about 25 times its text in memory; past this size, list prompts in a
# prompts_file (.txt, .jsonl, .csv): a row there costs a small fraction of a YAML node tree.
MAX_MANIFEST_BYTES = 32 * 1024 * 1024


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_SLUG_DROP = re.compile(r"[^a-z0-9]+")

_TOP_KEYS = (
    "name",
    "model",
    "output",
    "defaults",
    "items",
    "limits",
    "price_usd",
    "prompts_file",
    "matrix",
    "variants",
    "id_template",
)
_ENTRY_KEYS = ("matrix", "variants", "id_template")  # item keys that shape expansion, not the request
_LIMIT_KEYS = ("concurrency", "rpm", "max_cost_usd", "max_images")



@dataclass(frozen=True)
class Item:
    id: str
    params: Mapping[str, Any]  # the exact JSON body to POST: defaults merged under the item's values
    index: int  # 0-based position among the expanded items
    line: int  # 1-based line of the item in the file
    source: str | None = None  # the prompts file the item came from; None for the manifest itself


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


def derive_id(params: Mapping[str, Any]) -> str:
    """Id from content, not position: inserting prompts must not rename (and so resubmit) others."""
    prompt = params.get("prompt")
    slug = _slug(prompt if isinstance(prompt, str) else "")
    digest = hashlib.sha256(canonical_json(dict(params)).encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"



# ----------------------------------------------------------------------------- the loader


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; every failure is a one-line ManifestError."""
    shown = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                shown, None, None, f"file is too large ({size} bytes, limit {MAX_MANIFEST_BYTES}); put the prompts in a prompts_file"
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




def _default_name(stem: str) -> str:
    if check_safe_name(stem) is None:
        return stem
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:100]
    return s if s and check_safe_name(s) is None else "manifest"


def _number(
    conv: Converter, node: yaml.Node, fieldpath: str, *, integer: bool, low: float, low_open: bool
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


def _string(conv: Converter, node: yaml.Node, fieldpath: str) -> str:
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
    """yaml-rs's reading when it can be vouched for and passes every check; else PyYAML's.

    Only PyYAML's node tree knows where each value was written, so a manifest with a mistake is
    always loaded again that way to report it; both ways give the same Manifest for a valid one.
    """
    with _gc_paused():
        if fast.available():
            conv = fast.FastConverter(shown)
            try:
                return _load_unpaused(text, shown, path, fast.fast_root(text, conv), conv)
            except (fast.Fallback, ManifestError):
                pass
        return _load_unpaused(text, shown, path)


def _load_unpaused(
    text: str, shown: str, path: Path, root: yaml.Node | None = None, conv: Converter | None = None
) -> Manifest:
    if root is None:
        root = compose(text, shown)
    if root is None:
        raise ManifestError(shown, None, None, "manifest is empty")
    conv = conv or Converter(shown)
    conv.check_tag(root, None)
    if not isinstance(root, yaml.MappingNode) or root.tag != MAP:
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
        isinstance(top["defaults"], yaml.ScalarNode) and top["defaults"].tag == NULL
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

    # entries: inline items, then every prompts file, then matrix and variants expanded
    axes = _matrix(conv, checker, spec is not None, top.get("matrix"), "matrix")
    variants = _variants(conv, top.get("variants"), "variants")
    template = _template(conv, top.get("id_template"), "id_template")
    entries: list[_Raw] = []
    explicit: dict[str, tuple[str, str]] = {}  # casefolded id -> (id, where it was set)

    files = _prompts_files(conv, top.get("prompts_file"), path)
    inode = top.get("items")
    if inode is None and not files:
        raise ManifestError(
            shown, None, "items", "missing: the manifest needs a non-empty list of items (or a prompts_file)"
        )
    if inode is not None:
        conv.check_tag(inode, "items")
        empty_ok = bool(files) and isinstance(inode, yaml.ScalarNode) and inode.tag == NULL
        if not empty_ok and (not isinstance(inode, yaml.SequenceNode) or inode.tag != SEQ):
            raise conv.error(
                inode, "items", "must be a list of items (mappings with a prompt, or prompt strings)"
            )
        if not empty_ok and not inode.value and not files:
            raise conv.error(inode, "items", "must not be empty")
        for index, node in enumerate([] if empty_ok else inode.value):
            entries.append(
                _item(conv, checker, spec is not None, node, index, defaults, default_nodes, explicit, axes)
            )
    for fnode, fpath, fshown in files:
        for line, row in _read_prompts(conv, fnode, fpath, fshown, spec):
            entries.append(
                _file_entry(conv, checker, spec is not None, fshown, line, row, defaults, default_nodes, explicit, axes)
            )

    built = _expand(conv, entries, explicit, variants, template)
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


def _limits(conv: Converter, node: yaml.Node | None) -> Limits:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL):
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


def _param_problems(checker: ModelSpec, known: bool, params: Mapping[str, Any]) -> list[Problem]:
    """Every rule of a known model; for an unknown one only the prompt, the rest passes through."""
    if known:
        return validate_params(checker, params)
    return validate_params(checker, {"prompt": params["prompt"]} if "prompt" in params else {})


def _problem_error(
    conv: Converter, problem: Problem, key_node: yaml.Node, value_node: yaml.Node, key: str, prefix: str
) -> ManifestError:
    sub = problem.field[len(key) :] if problem.field.startswith(key) else ""
    line = blame_line(key_node, value_node, sub)
    return ManifestError(conv.path, line, f"{prefix}.{problem.field}", problem.message)


_INHERIT: Any = object()  # an item that does not set variants / id_template takes the top level's
MAX_VARIANTS = 10_000


@dataclass
class _Raw:
    """An entry before ids are settled and matrix and variants are expanded."""

    id: str | None
    params: dict[str, Any]
    own: frozenset[str]
    line: int
    source: str | None  # prompts file shown in messages; None for the manifest
    axes: tuple[X.Axis, ...]
    variants: Any  # int, None (none) or _INHERIT
    template: Any  # str, None or _INHERIT
    where: str  # field prefix in messages: "items[3]" or "" for a prompts-file row


def _item(
    conv: Converter,
    checker: ModelSpec,
    known: bool,
    node: yaml.Node,
    index: int,
    defaults: dict[str, Any],
    default_nodes: dict[str, tuple[yaml.Node, yaml.Node]],
    explicit: dict[str, tuple[str, str]],
    axes: tuple[X.Axis, ...],
) -> _Raw:
    where = f"items[{index}]"
    line = line_of(node)
    own: dict[str, Any] = {}
    own_nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    extras: dict[str, yaml.Node] = {}
    item_id: str | None = None
    conv.check_tag(node, where)
    if isinstance(node, yaml.ScalarNode) and node.tag == STR:
        own["prompt"] = node.value
        own_nodes["prompt"] = (node, node)
    elif isinstance(node, yaml.MappingNode) and node.tag == MAP:
        for k, knode, v in conv.pairs(node, where):
            if k == "id":
                f = f"{where}.id"
                vv, _ = conv.value(v, f)
                item_id = _claim_id(vv, lambda m, v=v, f=f: conv.error(v, f, m), explicit, f"line {line_of(v)}")
                continue
            if k in _ENTRY_KEYS:
                extras[k] = v
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

    problems = _param_problems(checker, known, params)
    if problems:
        p = problems[0]
        key = PATH_PART.match(p.field)
        top_key = key.group(1) if key else p.field
        if top_key in own_nodes:
            raise _problem_error(conv, p, *own_nodes[top_key], top_key, where)
        if top_key in default_nodes:
            raise _problem_error(conv, p, *default_nodes[top_key], top_key, "defaults")
        raise ManifestError(conv.path, line, f"{where}.{p.field}", p.message)

    if "matrix" in extras:
        axes = _merge_axes(axes, _matrix(conv, checker, known, extras["matrix"], f"{where}.matrix"))
    variants = _variants(conv, extras["variants"], f"{where}.variants") if "variants" in extras else _INHERIT
    template = _template(conv, extras["id_template"], f"{where}.id_template") if "id_template" in extras else _INHERIT
    return _Raw(item_id, params, frozenset(own), line, None, axes, variants, template, where)


def _claim_id(
    v: Any, fail: Callable[[str], ManifestError], explicit: dict[str, tuple[str, str]], where: str
) -> str:
    """Check an explicit id and reserve it; ``where`` says where it was set, for the duplicate's message."""
    if not isinstance(v, str):
        raise fail(f"must be a string, got {v!r} (quote it)")
    why = check_safe_name(v)
    if why:
        raise fail(f"not safe as a file name: {why}")
    folded = v.casefold()
    if folded in explicit:
        first, first_where = explicit[folded]
        raise fail(f"duplicate id {v!r}: already used by {first!r} on {first_where} (ids are case-insensitive)")
    explicit[folded] = (v, where)
    return v


# ----------------------------------------------------------------------------- matrix, variants, files


def _value_key(value: Any) -> str:
    return canonical_json(value)


def _merge_axes(base: tuple[X.Axis, ...], own: tuple[X.Axis, ...]) -> tuple[X.Axis, ...]:
    """An item's matrix replaces the top level's list for the same parameter and adds new ones."""
    mine = dict(own)
    merged = [(n, mine.pop(n, vs)) for n, vs in base]
    merged.extend(mine.items())
    return tuple(merged)


def _matrix(conv: Converter, checker: ModelSpec, known: bool, node: yaml.Node | None, fieldpath: str) -> tuple[X.Axis, ...]:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL):
        return ()
    conv.check_tag(node, fieldpath)
    if not isinstance(node, yaml.MappingNode):
        raise conv.error(node, fieldpath, "must be a mapping of parameter: [value, value, ...]")
    out: list[X.Axis] = []
    for k, knode, v in conv.pairs(node, fieldpath):
        f = f"{fieldpath}.{k}"
        conv.check_tag(v, f)
        if k in ("prompt", "id"):
            raise conv.error(knode, f, "cannot be a matrix axis: list prompts as items or in a prompts_file")
        if not isinstance(v, yaml.SequenceNode) or not v.value:
            raise conv.error(v, f, "must be a non-empty list of values")
        values: list[Any] = []
        seen: dict[str, int] = {}
        for i, child in enumerate(v.value):
            fi = f"{f}[{i}]"
            val, _ = conv.value(child, fi)
            if known:
                problems = check_param(checker, k, val)
                if problems:
                    sub = problems[0].field[len(k) :] if problems[0].field.startswith(k) else ""
                    raise ManifestError(conv.path, blame_line(child, child, sub), fi + sub, problems[0].message)
            key = _value_key(val)
            if key in seen:
                raise conv.error(child, fi, f"duplicate value (same as {f}[{seen[key]}])")
            seen[key] = i
            values.append(val)
        out.append((k, tuple(values)))
    return tuple(out)


def _plain_matrix(
    checker: ModelSpec, known: bool, raw: Any, fail: Callable[[str, str], ManifestError]
) -> tuple[X.Axis, ...]:
    """A prompts-file row's matrix: the same rules as in YAML, blamed on the row's line."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise fail("matrix", "must be an object of parameter: [value, value, ...]")
    out: list[X.Axis] = []
    for k, vs in raw.items():
        f = f"matrix.{k}"
        if k in ("prompt", "id"):
            raise fail(f, "cannot be a matrix axis: list prompts as rows")
        if not isinstance(vs, list) or not vs:
            raise fail(f, "must be a non-empty list of values")
        seen: set[str] = set()
        for i, val in enumerate(vs):
            if known:
                problems = check_param(checker, k, val)
                if problems:
                    raise fail(f"{f}[{i}]", problems[0].message)
            key = _value_key(val)
            if key in seen:
                raise fail(f"{f}[{i}]", "duplicate value")
            seen.add(key)
        out.append((k, tuple(vs)))
    return tuple(out)


def _variants(conv: Converter, node: yaml.Node, fieldpath: str) -> int | None:
    if node is None:
        return None
    v = _number(conv, node, fieldpath, integer=True, low=1, low_open=False)
    if v is not None and v > MAX_VARIANTS:
        raise conv.error(node, fieldpath, f"must be at most {MAX_VARIANTS}, got {v}")
    return v


def _template(conv: Converter, node: yaml.Node | None, fieldpath: str) -> str | None:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL):
        return None
    t = _string(conv, node, fieldpath)
    why = X.template_fields(t)
    if isinstance(why, str):
        raise conv.error(node, fieldpath, why)
    return t


def _prompts_files(conv: Converter, node: yaml.Node | None, manifest: Path) -> list[tuple[yaml.Node, Path, str]]:
    """Each prompts file with the node that named it; relative paths are relative to the manifest."""
    if node is None:
        return []
    conv.check_tag(node, "prompts_file")
    nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not nodes:
        raise conv.error(node, "prompts_file", "must name at least one file")
    out = []
    for i, n in enumerate(nodes):
        f = "prompts_file" if n is node else f"prompts_file[{i}]"
        rel = Path(_string(conv, n, f))
        p = rel if rel.is_absolute() else manifest.parent / rel
        out.append((n, p, str(p)))
    return out


def _read_prompts(
    conv: Converter, fnode: yaml.Node, fpath: Path, fshown: str, spec: ModelSpec | None
) -> list[tuple[int, dict[str, Any]]]:
    def fail(line: int | None, fieldname: str | None, message: str) -> ManifestError:
        if line is None:  # the file as a whole: blame the manifest line that names it
            return ManifestError(conv.path, line_of(fnode), "prompts_file", f"{fshown}: {message}")
        return ManifestError(fshown, line, fieldname, message)

    return read_rows(fpath, spec, fail)


def _file_entry(
    conv: Converter,
    checker: ModelSpec,
    known: bool,
    fshown: str,
    line: int,
    row: dict[str, Any],
    defaults: dict[str, Any],
    default_nodes: dict[str, tuple[yaml.Node, yaml.Node]],
    explicit: dict[str, tuple[str, str]],
    axes: tuple[X.Axis, ...],
) -> _Raw:
    def fail(fieldname: str | None, message: str) -> ManifestError:
        return ManifestError(fshown, line, fieldname, message)

    own: dict[str, Any] = {}
    item_id: str | None = None
    variants: Any = _INHERIT
    template: Any = _INHERIT
    for k, v in row.items():
        if k == "id":
            item_id = _claim_id(v, lambda m: fail("id", m), explicit, f"{fshown}:{line}")
        elif k == "variants":
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_VARIANTS):
                raise fail("variants", f"must be an integer from 1 to {MAX_VARIANTS}, got {v!r}")
            variants = v
        elif k == "id_template":
            why = X.template_fields(v) if isinstance(v, str) else "must be a string"
            if isinstance(why, str):
                raise fail("id_template", why)
            template = v
        elif k == "matrix":
            axes = _merge_axes(axes, _plain_matrix(checker, known, v, fail))
        else:
            own[k] = v
    params = {**defaults, **own}
    problems = _param_problems(checker, known, params)
    if problems:
        p = problems[0]
        key = PATH_PART.match(p.field)
        top_key = key.group(1) if key else p.field
        if top_key not in own and top_key in default_nodes:
            raise _problem_error(conv, p, *default_nodes[top_key], top_key, "defaults")
        raise fail(p.field, p.message)
    return _Raw(item_id, params, frozenset(own), line, fshown, axes, variants, template, "")


def _expand(
    conv: Converter,
    entries: list[_Raw],
    explicit: dict[str, tuple[str, str]],
    top_variants: int | None,
    top_template: str | None,
) -> list[Item]:
    """Settle every id, then expand; any two items with one id (case-insensitively) is an error."""
    # Derived ids avoid explicit ids and earlier ids, so no id can collide whatever the order.
    taken = set(explicit)
    settled: list[tuple[_Raw, X.Entry]] = []
    total = 0
    for raw in entries:
        shown = raw.source or conv.path
        variants = top_variants if raw.variants is _INHERIT else raw.variants
        template = top_template if raw.template is _INHERIT else raw.template
        axes = tuple((n, vs) for n, vs in raw.axes if n not in raw.own)
        prefix = f"{raw.where}." if raw.where else ""
        if variants is not None and ("seed" in raw.own or any(n == "seed" for n, _ in axes)):
            raise ManifestError(
                shown, raw.line, f"{prefix}seed",
                "variants derive one seed per variant: remove seed from the item or the matrix, or drop variants",
            )
        if template is not None and (axes or variants is not None):
            fields = X.template_fields(template)
            assert isinstance(fields, list)
            missing = [n for n, _ in axes if n not in fields] + (
                ["variant"] if variants is not None and "variant" not in fields else []
            )
            if missing:
                raise ManifestError(
                    shown, raw.line, f"{prefix}id_template",
                    f"must name {', '.join('{' + m + '}' for m in missing)} so that every expanded id is unique",
                )
        total += X.expansion_size(axes, variants)
        if total > X.MAX_ITEMS:
            raise ManifestError(shown, raw.line, raw.where or None, f"the manifest expands to more than {X.MAX_ITEMS} items")
        item_id = raw.id
        if item_id is None:
            base = derive_id(raw.params)
            item_id, n = base, 1
            while item_id.casefold() in taken:
                n += 1
                item_id = f"{base}-{n}"
            taken.add(item_id.casefold())
        settled.append((raw, X.Entry(item_id, raw.params, raw.own, axes, variants, template)))

    built: list[Item] = []
    seen: dict[str, tuple[str, str]] = {}
    proxy = types.MappingProxyType
    for raw, entry in settled:
        shown = raw.source or conv.path
        expanded = bool(entry.axes) or entry.variants is not None
        try:
            for item_id, params in X.expand_entry(entry):
                folded = item_id.casefold()
                if expanded:
                    why = check_safe_name(item_id)
                    if why:
                        raise ManifestError(
                            shown, raw.line, f"{raw.where}.id" if raw.where else "id",
                            f"expanded id not safe as a file name: {why}; shorten it with id_template",
                        )
                if folded in seen:
                    first, where = seen[folded]
                    raise ManifestError(
                        shown, raw.line, f"{raw.where}.id" if raw.where else "id",
                        f"id {item_id!r} is also the id of {first!r} from {where}; set an id or an id_template",
                    )
                seen[folded] = (item_id, f"{shown}:{raw.line}")
                built.append(Item(item_id, proxy(params), len(built), raw.line, raw.source))
        except KeyError as e:
            raise ManifestError(
                shown, raw.line, f"{raw.where}.id_template" if raw.where else "id_template",
                f"{{{e.args[0]}}} is not a parameter of this item",
            ) from None
    return built
