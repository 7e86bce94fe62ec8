"""YAML manifest → validated, frozen items.

Everything a user can get wrong in a manifest is reported here, with file, line and field, before
any request costs money. The loader composes the YAML into nodes and converts them itself instead
of calling ``yaml.safe_load``: only then does every value keep the line it came from, and only then
can aliases be bounded (an alias bomb is cheap to compose but huge to expand). This module reads
the top level and turns each inline item and each prompts-file row into a plain entry for the one
validator (``validate.py``); ``build.py`` settles ids and expands.

A mistake does not end the reading: each top-level key, each item, each row is checked on its own,
and the mistakes are reported together (``mistakes.py``). Only a mistake that leaves nothing sound
to check against (YAML syntax, the model, the manifest's size) ends it, with those found before.

Paths: ``output`` is kept as written; a relative path is relative to the current working directory
of the process (not to the manifest's folder), so ``batchgen run jobs/x.yaml`` from the project
root writes to ``./out/x``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from batchgen.core.gcpause import gc_paused
from batchgen.models import DEFAULT_MODEL, MODELS, did_you_mean, get_model, suggest

from . import fast
from .build import build_items
from .ids import check_safe_name, default_name, derive_id
from .mistakes import Mistakes
from .promptfiles import read_rows
from .readfile import Unreadable, read_capped
from .types import Item, Limits, Manifest, ManifestError
from .validate import ENTRY_KEYS, ROWS, YAML, Origin, Raw, Rules
from .yamlnodes import (
    MAP,
    MAX_EXPANDED_NODES,
    MAX_ITEM_NODES,
    SEQ,
    STR,
    Converter,
    compose,
    is_null,
    line_of,
    locator,
    number,
    optional,
    string,
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
    """Read and validate a manifest file; a ManifestError (one line per mistake) on any failure.

    Only a regular file is read (a FIFO or a device is refused at once), at most MAX_MANIFEST_BYTES.
    """
    shown = str(path)
    p = Path(path)
    try:
        data = read_capped(p, MAX_MANIFEST_BYTES, "manifest file", "put the prompts in a prompts_file")
    except Unreadable as e:
        raise ManifestError(shown, None, None, e.message) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ManifestError(shown, line, None, f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    del data
    return _load(text, shown, p)


def loads_manifest(text: str, path: str = "<string>") -> Manifest:
    """Validate manifest text; ``path`` is only used in messages and for the default name."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(path, None, None, f"manifest is too large (limit {MAX_MANIFEST_BYTES} bytes)")
    return _load(text, path, Path(path))


def _load(text: str, shown: str, path: Path) -> Manifest:
    """yaml-rs's reading when it can be vouched for and passes every check; else PyYAML's.

    Only PyYAML's node tree knows where each value was written, so a manifest with a mistake is
    always loaded again that way to report it; both ways give the same Manifest for a valid one.
    """
    with gc_paused():
        if fast.available():
            conv = fast.FastConverter(shown)
            try:
                quick = Mistakes(shown, fail_fast=True)  # any mistake: report it from PyYAML's reading
                return _load_unpaused(text, shown, path, quick, fast.fast_root(text), conv)
            except (fast.Fallback, ManifestError):
                pass
        return _load_unpaused(text, shown, path, Mistakes(shown))


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    return f"unknown key{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})"


def _unknown_model(model: str) -> str:
    near = suggest(model, MODELS)
    hint = f" (did you mean {near!r}? `batchgen models` lists the known models)" if near else ""
    return f"unknown model {model!r}: parameters are passed through unvalidated{hint}"


def _load_unpaused(
    text: str, shown: str, path: Path, mistakes: Mistakes, root: yaml.Node | None = None, conv: Converter | None = None
) -> Manifest:
    manifest = None
    try:
        manifest = _read(text, shown, path, mistakes, root, conv)
    except ManifestError as e:
        if mistakes.raised:
            raise
        mistakes.add(e)  # the mistake that ended the reading, with those found before it
    mistakes.raise_if_any()
    assert manifest is not None
    return manifest


def _read(
    text: str, shown: str, path: Path, mistakes: Mistakes, root: yaml.Node | None, conv: Converter | None
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
            mistakes.add(conv.error(knode, k, _unknown_key(k, _TOP_KEYS)))
            continue
        top[k] = v

    # name / model / output / price_usd
    name = default_name(path.stem)
    if "name" in top:
        with mistakes.caught():
            given = string(conv, top["name"], "name")
            why = check_safe_name(given)
            if why:
                raise conv.error(top["name"], "name", f"must be safe as a folder name: {why}")
            name = given
    # Every rule depends on the model: a mistake here ends the reading.
    model = string(conv, top["model"], "model") if "model" in top else DEFAULT_MODEL
    output = Path("out") / name
    if "output" in top:
        with mistakes.caught():
            output = Path(string(conv, top["output"], "output"))
    price = None
    if "price_usd" in top:
        with mistakes.caught():
            price = number(conv, top["price_usd"], "price_usd", integer=False, low=0, low_open=True)
            price = None if price is None else float(price)

    limits = _limits(conv, top.get("limits"), mistakes)

    warnings: list[str] = []
    spec = get_model(model)
    if spec is None:
        warnings.append(_unknown_model(model))
    rules = Rules(shown, model, spec, mistakes)

    default_sizes: dict[str, int] = {}
    if not is_null(top.get("defaults")):
        dnode = top["defaults"]
        with mistakes.caught():
            conv.check_tag(dnode, "defaults")
            if not isinstance(dnode, yaml.MappingNode):
                raise conv.error(dnode, "defaults", "must be a mapping of model parameters")
            defaults: dict[str, Any] = {}
            for k, _, v in conv.pairs(dnode, "defaults"):
                with mistakes.caught():
                    defaults[k], default_sizes[k] = conv.value(v, f"defaults.{k}")
            rules.set_defaults(defaults, Origin("defaults", locator(shown, dnode)))

    # entries: inline items, then every prompts file, then matrix and variants expanded
    shape: dict[str, Any] = {}
    for key in ("matrix", "variants", "id_template"):
        with mistakes.caught():
            shape[key] = optional(conv, top.get(key), key)
    rules.set_shape(shape.get("matrix"), shape.get("variants"), shape.get("id_template"), Origin("", locator(shown, root)))
    rules.shape_ok = rules.shape_ok and len(shape) == 3
    entries: list[Raw] = []
    files = _prompts_files(conv, top.get("prompts_file"), path, mistakes)
    has_files = "prompts_file" in top
    inode = top.get("items")
    if inode is None and not has_files:
        mistakes.add(ManifestError(
            shown, None, "items", "missing: the manifest needs a non-empty list of items (or a prompts_file)"
        ))
    if inode is not None:
        with mistakes.caught():
            _items(conv, rules, inode, has_files, default_sizes, entries)
    for fnode, fpath, fshown in files:
        mistakes.file(fshown)
        with mistakes.caught():
            for line, row in _read_prompts(conv, fnode, fpath, fshown, rules):
                origin = Origin("", lambda _field, f=fshown, n=line: (f, n), ROWS)
                raw = rules.entry(row, origin, line, fshown)
                if raw is not None:
                    entries.append(raw)

    return Manifest(
        path=path,
        name=name,
        model=model,
        output=output,
        items=tuple(build_items(rules, entries)) if rules.shape_ok else (),
        limits=limits,
        price_usd=price,
        warnings=tuple(warnings),
    )


def _items(
    conv: Converter, rules: Rules, inode: yaml.Node, has_files: bool, default_sizes: dict[str, int], entries: list[Raw]
) -> None:
    """Each inline item checked on its own: a bad one is recorded and the next one read."""
    conv.check_tag(inode, "items")
    empty_ok = has_files and is_null(inode)
    if not empty_ok and (not isinstance(inode, yaml.SequenceNode) or inode.tag != SEQ):
        raise conv.error(
            inode, "items", "must be a list of items (mappings with a prompt, or prompt strings)"
        )
    if not empty_ok and not inode.value and not has_files:
        raise conv.error(inode, "items", "must not be empty")
    if isinstance(inode, fast.PlainItems):
        _plain_items(conv, rules, inode, default_sizes, entries)
        return
    mistakes = rules.mistakes
    for index, node in enumerate([] if empty_ok else inode.value):
        try:
            raw = _item(conv, rules, node, index, default_sizes)
        except ManifestError as e:
            mistakes.add(e)
            continue
        if raw is not None:
            entries.append(raw)


def _plain_items(
    conv: Converter, rules: Rules, inode: fast.PlainItems, default_sizes: dict[str, int], entries: list[Raw]
) -> None:
    """yaml-rs's items, checked as ``_item`` checks nodes; any mistake is fatal here (fail-fast mistakes)
    and the file is read again through PyYAML to report it, so only a valid item's line matters."""
    extra = tuple(default_sizes.items())
    plain_item, entry, add = fast.plain_item, rules.entry, entries.append
    total = conv.total
    at, origin = fast.cursor(conv.path)  # one origin that follows the item checked (100k fewer)
    for index, (line, value) in enumerate(zip(inode.lines, inode.values, strict=True)):
        item, size = plain_item(value)
        if extra:
            size += sum(n for k, n in extra if k not in item or k in ENTRY_KEYS)
        if size > MAX_ITEM_NODES or total + size > MAX_EXPANDED_NODES:
            raise fast.Fallback
        total += size
        at.index, at.line = index, line
        raw = entry(item, origin, line, None, index)
        if raw is not None:
            add(raw)
    conv.total = total


def _limits(conv: Converter, node: yaml.Node | None, mistakes: Mistakes) -> Limits:
    if is_null(node):
        return Limits()
    assert node is not None
    values: dict[str, Any] = {}
    with mistakes.caught():
        conv.check_tag(node, "limits")
        if not isinstance(node, yaml.MappingNode):
            raise conv.error(node, "limits", f"must be a mapping with any of {', '.join(_LIMIT_KEYS)}")
        for k, knode, v in conv.pairs(node, "limits"):
            with mistakes.caught():
                values[k] = _limit(conv, k, knode, v)
    return Limits(**values)


def _limit(conv: Converter, k: str, knode: yaml.Node, v: yaml.Node) -> Any:
    f = f"limits.{k}"
    if k == "concurrency":
        return number(conv, v, f, integer=True, low=1, low_open=False)
    if k == "rpm":
        r = number(conv, v, f, integer=False, low=0, low_open=True)
        return None if r is None else float(r)
    if k == "max_cost_usd":
        c = number(conv, v, f, integer=False, low=0, low_open=False)
        return None if c is None else float(c)
    if k == "max_images":
        return number(conv, v, f, integer=True, low=0, low_open=False)
    raise conv.error(knode, f, _unknown_key(k, _LIMIT_KEYS))


def _item(conv: Converter, rules: Rules, node: yaml.Node, index: int, default_sizes: dict[str, int]) -> Raw | None:
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
        too_large = conv.error(node, where, "the manifest is too large once YAML aliases are expanded")
        too_large.final = True
        raise too_large
    return rules.entry(values, Origin(where, locator(conv.path, node), YAML), line_of(node), None, index)


def _prompts_files(
    conv: Converter, node: yaml.Node | None, manifest: Path, mistakes: Mistakes
) -> list[tuple[yaml.Node, Path, str]]:
    """Each prompts file with the node that named it; relative paths are relative to the manifest."""
    out: list[tuple[yaml.Node, Path, str]] = []
    if node is None:
        return out
    with mistakes.caught():
        conv.check_tag(node, "prompts_file")
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not nodes:
            raise conv.error(node, "prompts_file", "must name at least one file")
        for i, n in enumerate(nodes):
            f = "prompts_file" if n is node else f"prompts_file[{i}]"
            with mistakes.caught():
                rel = Path(string(conv, n, f))
                p = rel if rel.is_absolute() else manifest.parent / rel
                out.append((n, p, str(p)))
    return out


def _read_prompts(
    conv: Converter, fnode: yaml.Node, fpath: Path, fshown: str, rules: Rules
) -> Iterator[tuple[int, dict[str, Any]]]:
    def fail(line: int | None, fieldname: str | None, message: str) -> ManifestError:
        if line is None:  # the file as a whole: blame the manifest line that names it
            return ManifestError(conv.path, line_of(fnode), "prompts_file", f"{fshown}: {message}")
        return ManifestError(fshown, line, fieldname, message)

    return read_rows(fpath, rules.spec, fail, rules.mistakes.add)  # type: ignore[arg-type]
