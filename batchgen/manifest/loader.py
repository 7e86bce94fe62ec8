"""YAML manifest → validated, frozen items.

Everything a user can get wrong in a manifest is reported here, with file, line and field, before
any request costs money. The loader composes the YAML into nodes and converts them itself instead
of calling ``yaml.safe_load``: only then does every value keep the line it came from, and only then
can aliases be bounded (an alias bomb is cheap to compose but huge to expand). This module reads
the top level and turns each inline item and each prompts-file row into a plain entry for the one
validator (``validate.py``); ``build.py`` settles ids and expands.

Paths: ``output`` is kept as written; a relative path is relative to the current working directory
of the process (not to the manifest's folder), so ``batchgen run jobs/x.yaml`` from the project
root writes to ``./out/x``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from batchgen.models import DEFAULT_MODEL, get_model

from . import fast
from .build import build_items
from .ids import check_safe_name, default_name, derive_id
from .promptfiles import read_rows
from .types import Item, Limits, Manifest, ManifestError
from .validate import ENTRY_KEYS, ROWS, YAML, Origin, Raw, Rules, number_problem
from .yamlnodes import (
    MAP,
    MAX_EXPANDED_NODES,
    MAX_ITEM_NODES,
    NULL,
    SEQ,
    STR,
    Converter,
    compose,
    line_of,
    locator,
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

# A YAML tree costs about 25 times its text in memory; past this size, list prompts in a
# prompts_file (.txt, .jsonl, .csv): a row there costs a small fraction of a YAML node tree.
MAX_MANIFEST_BYTES = 32 * 1024 * 1024

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
_LIMIT_KEYS = ("concurrency", "rpm", "max_cost_usd", "max_images")


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


def _is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL)


def _number(
    conv: Converter, node: yaml.Node, fieldpath: str, *, integer: bool, low: float, low_open: bool
) -> Any:
    v, _ = conv.value(node, fieldpath)
    if v is None:
        return None
    why = number_problem(v, integer=integer, low=low, low_open=low_open)
    if why:
        raise conv.error(node, fieldpath, why)
    return v


def _string(conv: Converter, node: yaml.Node, fieldpath: str) -> str:
    v, _ = conv.value(node, fieldpath)
    if not isinstance(v, str) or not v.strip():
        raise conv.error(node, fieldpath, f"must be a non-empty string, got {v!r}")
    return v


def _optional(conv: Converter, node: yaml.Node | None, fieldpath: str) -> Any:
    return None if node is None else conv.value(node, fieldpath)[0]


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
        name = default_name(path.stem)
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
    rules = Rules(shown, model, spec)

    default_sizes: dict[str, int] = {}
    if not _is_null(top.get("defaults")):
        dnode = top["defaults"]
        conv.check_tag(dnode, "defaults")
        if not isinstance(dnode, yaml.MappingNode):
            raise conv.error(dnode, "defaults", "must be a mapping of model parameters")
        defaults: dict[str, Any] = {}
        for k, _, v in conv.pairs(dnode, "defaults"):
            defaults[k], default_sizes[k] = conv.value(v, f"defaults.{k}")
        rules.set_defaults(defaults, Origin("defaults", locator(shown, dnode)))

    # entries: inline items, then every prompts file, then matrix and variants expanded
    rules.set_shape(
        _optional(conv, top.get("matrix"), "matrix"),
        _optional(conv, top.get("variants"), "variants"),
        _optional(conv, top.get("id_template"), "id_template"),
        Origin("", locator(shown, root)),
    )
    entries: list[Raw] = []
    files = _prompts_files(conv, top.get("prompts_file"), path)
    inode = top.get("items")
    if inode is None and not files:
        raise ManifestError(
            shown, None, "items", "missing: the manifest needs a non-empty list of items (or a prompts_file)"
        )
    if inode is not None:
        conv.check_tag(inode, "items")
        empty_ok = bool(files) and _is_null(inode)
        if not empty_ok and (not isinstance(inode, yaml.SequenceNode) or inode.tag != SEQ):
            raise conv.error(
                inode, "items", "must be a list of items (mappings with a prompt, or prompt strings)"
            )
        if not empty_ok and not inode.value and not files:
            raise conv.error(inode, "items", "must not be empty")
        for index, node in enumerate([] if empty_ok else inode.value):
            entries.append(_item(conv, rules, node, index, default_sizes))
    for fnode, fpath, fshown in files:
        for line, row in _read_prompts(conv, fnode, fpath, fshown, rules):
            origin = Origin("", lambda _field, f=fshown, n=line: (f, n), ROWS)
            entries.append(rules.entry(row, origin, line, fshown))

    return Manifest(
        path=path,
        name=name,
        model=model,
        output=output,
        items=tuple(build_items(rules, entries)),
        limits=limits,
        price_usd=price,
        warnings=tuple(warnings),
    )


def _limits(conv: Converter, node: yaml.Node | None) -> Limits:
    if _is_null(node):
        return Limits()
    assert node is not None
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


def _item(conv: Converter, rules: Rules, node: yaml.Node, index: int, default_sizes: dict[str, int]) -> Raw:
    """One inline item as a plain entry for the validator, its size bounded (aliases count each use)."""
    where = f"items[{index}]"
    conv.check_tag(node, where)
    values: dict[str, Any] = {}
    size = 1
    if isinstance(node, yaml.ScalarNode) and node.tag == STR:
        values["prompt"] = node.value
        size += 1
    elif isinstance(node, yaml.MappingNode) and node.tag == MAP:
        for k, _, v in conv.pairs(node, where):
            values[k], n = conv.value(v, f"{where}.{k}")
            if k != "id" and k not in ENTRY_KEYS:
                size += n
    else:
        hint = (
            " (quote a prompt that YAML reads as a number, boolean or null)"
            if isinstance(node, yaml.ScalarNode)
            else ""
        )
        raise conv.error(node, where, f"must be a mapping of parameters or a prompt string{hint}")

    size += sum(n for k, n in default_sizes.items() if k not in values or k in ENTRY_KEYS)
    if size > MAX_ITEM_NODES:
        raise conv.error(node, where, f"parameters are too large ({size} values once aliases are expanded)")
    conv.total += size
    if conv.total > MAX_EXPANDED_NODES:
        raise conv.error(node, where, "the manifest is too large once YAML aliases are expanded")
    return rules.entry(values, Origin(where, locator(conv.path, node), YAML), line_of(node), None)


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
    conv: Converter, fnode: yaml.Node, fpath: Path, fshown: str, rules: Rules
) -> list[tuple[int, dict[str, Any]]]:
    def fail(line: int | None, fieldname: str | None, message: str) -> ManifestError:
        if line is None:  # the file as a whole: blame the manifest line that names it
            return ManifestError(conv.path, line_of(fnode), "prompts_file", f"{fshown}: {message}")
        return ManifestError(fshown, line, fieldname, message)

    return read_rows(fpath, rules.spec, fail)
