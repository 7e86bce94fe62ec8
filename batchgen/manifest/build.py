"""Checked entries → items: settle every id, then expand matrix and variants.

Ids are settled before anything expands, so a derived id never takes an explicit one wherever the
two are written; two items with one id (case-insensitively) are an error naming both. A mistake
leaves its entry out and is recorded; the other entries are still built and checked.

Built for a million rows: an entry is settled in place, an entry without matrix or variants
becomes its item without copying its parameters, and each entry is dropped from the list as soon
as its items exist, so entries and items are not both held whole.
"""

from __future__ import annotations

import types

from . import expand as X
from .ids import check_safe_name, derive_id
from .types import Item, ManifestError
from .validate import INHERIT, Raw, Rules

__all__ = ["build_items"]


def build_items(rules: Rules, entries: list[Raw | None]) -> list[Item]:
    """Every item of the manifest, in entry order; any mistake is blamed on its entry's line.

    ``entries`` is consumed: each one is settled in place, then taken out once built.
    """
    # Derived ids avoid explicit ids and earlier ids, so no id can collide whatever the order.
    taken = set(rules.ids.claimed)
    total = 0
    for i, raw in enumerate(entries):
        assert raw is not None
        try:
            _settle(rules, raw, taken)
        except ManifestError as e:
            rules.mistakes.add(e)
            entries[i] = None
            continue
        total += X.expansion_size(raw.axes, raw.variants) if raw.axes or raw.variants is not None else 1
        if total > X.MAX_ITEMS:
            shown = raw.source or rules.path
            message = f"the manifest expands to more than {X.MAX_ITEMS} items"
            rules.mistakes.add(ManifestError(shown, raw.line, raw.where or None, message, final=True))
    del taken
    return _expand(rules, entries)


def _settle(rules: Rules, raw: Raw, taken: set[str]) -> None:
    """The entry's id (derived ones avoid ``taken``) and its expansion, checked and set on ``raw``."""
    shown = raw.source or rules.path
    variants = rules.variants if raw.variants is INHERIT else raw.variants
    template = rules.template if raw.template is INHERIT else raw.template
    own = raw.own
    axes = tuple((n, vs) for n, vs in raw.axes if n not in own) if raw.axes else ()
    if variants is not None and ("seed" in own or any(n == "seed" for n, _ in axes)):
        prefix = f"{raw.where}." if raw.where else ""
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
            prefix = f"{raw.where}." if raw.where else ""
            raise ManifestError(
                shown, raw.line, f"{prefix}id_template",
                f"must name {', '.join('{' + m + '}' for m in missing)} so that every expanded id is unique",
            )
    if raw.id is None:
        base = derive_id(raw.params)
        item_id, n = base, 1
        folded = item_id.casefold()
        while folded in taken:
            n += 1
            item_id = f"{base}-{n}"
            folded = item_id.casefold()
        taken.add(item_id if folded == item_id else folded)
        raw.id = item_id
    raw.axes, raw.variants, raw.template = axes, variants, template


def _id_field(raw: Raw) -> str:
    return f"{raw.where}.id" if raw.where else "id"


def _expand(rules: Rules, entries: list[Raw | None]) -> list[Item]:
    built: list[Item] = []
    # casefolded id -> the item that has it; the folded text is the id itself when it is already
    # folded (the usual case), so a million ids are not held twice.
    seen: dict[str, Item] = {}
    proxy = types.MappingProxyType
    seeds = rules.seeds or (0, 0)  # no seed range means no variants: the validator refused them
    slug = X.slugger(rules.spec)
    for i, raw in enumerate(entries):
        if raw is None:
            continue
        entries[i] = None
        assert raw.id is not None
        if not raw.axes and raw.variants is None:
            # One item, the entry's own parameters: nothing to expand, nothing to copy.
            item_id = raw.id
            folded = item_id.casefold()
            if folded == item_id:
                folded = item_id
            first = seen.get(folded)
            if first is not None:
                rules.mistakes.add(_same_id(rules, raw, item_id, first))
                continue
            index = len(built)
            if raw.index == index:  # the same number as an object that exists already: 100k ints fewer
                index = raw.index
            item = Item(item_id, proxy(raw.params), index, raw.line, raw.source)
            seen[folded] = item
            built.append(item)
            continue
        shown = raw.source or rules.path
        entry = X.Entry(raw.id, raw.params, raw.own, raw.axes, raw.variants, raw.template)
        try:
            for item_id, params in X.expand_entry(entry, seeds, slug):
                why = check_safe_name(item_id)
                if why:
                    raise ManifestError(
                        shown, raw.line, _id_field(raw),
                        f"expanded id not safe as a file name: {why}; shorten it with id_template",
                    )
                folded = item_id.casefold()
                if folded == item_id:
                    folded = item_id
                first = seen.get(folded)
                if first is not None:
                    raise _same_id(rules, raw, item_id, first)
                item = Item(item_id, proxy(params), len(built), raw.line, raw.source)
                seen[folded] = item
                built.append(item)
        except KeyError as e:
            rules.mistakes.add(ManifestError(
                shown, raw.line, f"{raw.where}.id_template" if raw.where else "id_template",
                f"{{{e.args[0]}}} is not a parameter of this item",
            ))
        except ManifestError as e:
            rules.mistakes.add(e)
    return built


def _same_id(rules: Rules, raw: Raw, item_id: str, first: Item) -> ManifestError:
    where = f"{first.source or rules.path}:{first.line}"
    return ManifestError(
        raw.source or rules.path, raw.line, _id_field(raw),
        f"id {item_id!r} is also the id of {first.id!r} from {where}; set an id or an id_template",
    )
