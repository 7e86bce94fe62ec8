"""Checked entries → items: settle every id, then expand matrix and variants.

Ids are settled before anything expands, so a derived id never takes an explicit one wherever the
two are written; two items with one id (case-insensitively) are an error naming both. A mistake
leaves its entry out and is recorded; the other entries are still built and checked.
"""

from __future__ import annotations

import types

from . import expand as X
from .ids import check_safe_name, derive_id
from .types import Item, ManifestError
from .validate import INHERIT, Raw, Rules

__all__ = ["build_items"]


def build_items(rules: Rules, entries: list[Raw]) -> list[Item]:
    """Every item of the manifest, in entry order; any mistake is blamed on its entry's line."""
    # Derived ids avoid explicit ids and earlier ids, so no id can collide whatever the order.
    taken = set(rules.ids.claimed)
    settled: list[tuple[Raw, X.Entry]] = []
    total = 0
    for raw in entries:
        try:
            entry = _settle(rules, raw, taken)
        except ManifestError as e:
            rules.mistakes.add(e)
            continue
        total += X.expansion_size(entry.axes, entry.variants)
        if total > X.MAX_ITEMS:
            shown = raw.source or rules.path
            message = f"the manifest expands to more than {X.MAX_ITEMS} items"
            rules.mistakes.add(ManifestError(shown, raw.line, raw.where or None, message, final=True))
        settled.append((raw, entry))
    return _expand(rules, settled)


def _settle(rules: Rules, raw: Raw, taken: set[str]) -> X.Entry:
    """The entry's id (derived ones avoid ``taken``) and its expansion, checked."""
    shown = raw.source or rules.path
    variants = rules.variants if raw.variants is INHERIT else raw.variants
    template = rules.template if raw.template is INHERIT else raw.template
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
    item_id = raw.id
    if item_id is None:
        base = derive_id(raw.params)
        item_id, n = base, 1
        while item_id.casefold() in taken:
            n += 1
            item_id = f"{base}-{n}"
        taken.add(item_id.casefold())
    return X.Entry(item_id, raw.params, raw.own, axes, variants, template)


def _expand(rules: Rules, settled: list[tuple[Raw, X.Entry]]) -> list[Item]:
    built: list[Item] = []
    seen: dict[str, tuple[str, str]] = {}
    proxy = types.MappingProxyType
    seeds = rules.seeds or (0, 0)  # no seed range means no variants: the validator refused them
    slug = X.slugger(rules.spec)
    for raw, entry in settled:
        shown = raw.source or rules.path
        expanded = bool(entry.axes) or entry.variants is not None
        try:
            for item_id, params in X.expand_entry(entry, seeds, slug):
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
            rules.mistakes.add(ManifestError(
                shown, raw.line, f"{raw.where}.id_template" if raw.where else "id_template",
                f"{{{e.args[0]}}} is not a parameter of this item",
            ))
        except ManifestError as e:
            rules.mistakes.add(e)
    return built
