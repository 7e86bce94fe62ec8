"""Matrix and variant expansion: one manifest entry → many items with stable, readable ids.

An expanded id is the entry's own id plus one short part per matrix value (and ``-v<n>`` per
variant), so adding a style or a variant adds items without renaming the ones already paid for,
and the id still says what the image is when it turns up as a file name.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchgen.core.fastjson import canonical_json
from batchgen.models import ModelSpec, unlisted_slug

__all__ = [
    "MAX_ITEMS",
    "Axis",
    "Entry",
    "SlugOf",
    "derive_seed",
    "expand_entry",
    "parameter_counts",
    "slugger",
    "template_fields",
    "value_slug",
]

MAX_ITEMS = 1_000_000

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_FIELD = re.compile(r"\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # used with fullmatch: "$" passes a final "\n"

Axis = tuple[str, tuple[Any, ...]]
SlugOf = Callable[[str, Any], str]  # (parameter, value) -> id part


@dataclass(frozen=True)
class Entry:
    """One manifest entry (an inline item or a prompts-file row) before expansion."""

    id: str
    params: Mapping[str, Any]  # defaults merged under the entry's own values
    own: frozenset[str]  # keys the entry set itself: a matrix axis never overrides them
    axes: tuple[Axis, ...]
    variants: int | None
    template: str | None


def value_slug(value: Any) -> str:
    """A short id part for a parameter value: readable where it can be, hashed where it cannot."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        s = _NON_ALNUM.sub("-", value.lower()).strip("-")[:24].strip("-")
        return s or _short_hash(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value_slug(value["name"])
    return _short_hash(value)


def slugger(spec: ModelSpec | None) -> SlugOf:
    """Id parts as the model's entry spells them (``1280x720``), the generic slug elsewhere."""
    if spec is None:
        return lambda name, value: unlisted_slug(value) or value_slug(value)
    own = {p.name: p.slug for p in spec.params if p.slug is not None}
    if not own:
        return lambda name, value: value_slug(value)

    def slug(name: str, value: Any) -> str:
        fn = own.get(name)
        return fn(value) if fn is not None else value_slug(value)

    return slug


def _short_hash(value: Any) -> str:
    text = canonical_json(value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def derive_seed(base_id: str, variant: int, seeds: tuple[int, int]) -> int:
    """Seed of variant ``n`` of an entry, from its id alone, inside the model's range ``seeds``.

    Every matrix combination of one variant shares the seed, so a grid of styles compares like
    with like; and it never depends on position, so it survives edits elsewhere in the manifest.
    """
    low, high = seeds
    digest = hashlib.sha256(f"{base_id}#{variant}".encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low + 1)


def template_fields(template: str) -> list[str] | str:
    """The placeholder names of an id template, or why the template is unusable."""
    names = []
    for m in _FIELD.finditer(template):
        name = m.group(1)
        if not _FIELD_NAME.fullmatch(name):
            return f"placeholder {{{name}}} must be a parameter name, {{id}} or {{variant}}"
        names.append(name)
    rest = _FIELD.sub("", template)
    if "{" in rest or "}" in rest:
        return "unbalanced '{' or '}'"
    if "id" not in names:
        return "must contain {id}, so that ids of different prompts cannot collide"
    return names


def _custom_template(template: str, slug: SlugOf) -> Callable[[Mapping[str, Any], int | None], str]:
    def render(values: Mapping[str, Any], variant: int | None) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "id":
                return str(values["id"])
            if name == "variant":
                if variant is None:
                    raise KeyError("variant")
                return str(variant)
            if name not in values:
                raise KeyError(name)
            return slug(name, values[name])

        return _FIELD.sub(sub, template)

    return render


def expansion_size(entry_axes: Sequence[Axis], variants: int | None) -> int:
    n = 1
    for _, values in entry_axes:
        n *= len(values)
    return n * (variants or 1)


def expand_entry(entry: Entry, seeds: tuple[int, int], slug: SlugOf) -> Iterable[tuple[str, dict[str, Any]]]:
    """``(id, params)`` of every item of one entry, in matrix order then variant order.

    ``seeds`` is the model's seed range and ``slug`` its way of spelling values in ids.

    Raises KeyError(name) when the id template names something an item does not have.
    """
    axes = [(n, vs) for n, vs in entry.axes if n not in entry.own]
    if not axes and entry.variants is None:
        yield entry.id, dict(entry.params)
        return
    variants: list[tuple[str, int | None, int | None]] = (
        [(f"-v{v}", v, derive_seed(entry.id, v, seeds)) for v in range(1, entry.variants + 1)]
        if entry.variants
        else [("", None, None)]
    )
    render = _custom_template(entry.template, slug) if entry.template else None
    slugs = [[slug(name, v) for v in vs] for name, vs in axes]
    base = dict(entry.params)
    for picks in itertools.product(*(range(len(vs)) for _, vs in axes)):
        params = dict(base)
        for (name, vs), i in zip(axes, picks, strict=True):
            params[name] = vs[i]
        stem = "-".join([entry.id, *(slugs[a][i] for a, i in enumerate(picks))])
        for suffix, v, seed in variants:
            p = dict(params) if seed is not None else params
            if seed is not None:
                p["seed"] = seed
            yield (render({**p, "id": entry.id}, v) if render else stem + suffix), p


def parameter_counts(
    items: Iterable[tuple[str, Mapping[str, Any]]], done: set[str], skip: Iterable[str] = ("prompt", "negative_prompt")
) -> dict[str, dict[str, tuple[int, int]]]:
    """Per parameter, per value: (items, of which done). Values of objects are shown as their slug."""
    skipped = set(skip)
    total: dict[str, Counter[str]] = {}
    finished: dict[str, Counter[str]] = {}
    for item_id, params in items:
        is_done = item_id in done
        for k, v in params.items():
            if k in skipped:
                continue
            label = v if isinstance(v, str) else value_slug(v) if isinstance(v, dict | list) else str(v)
            total.setdefault(k, Counter())[label] += 1
            if is_done:
                finished.setdefault(k, Counter())[label] += 1
    return {
        k: {label: (n, finished.get(k, Counter())[label]) for label, n in c.most_common()}
        for k, c in sorted(total.items())
    }


def describe_expansion(items: Sequence[Any], done: set[str], max_values: int = 12) -> list[str]:
    """Plan lines: where the items came from and how many of each parameter value (done / all).

    The same lines as ``parameter_counts`` gives, without its tables: a parameter past
    ``max_values`` distinct values (a seed per row of a million-row file) is only counted, and an
    integer is spelled as its label only where a string could share that label.
    """
    sources = Counter(getattr(it, "source", None) or "manifest" for it in items)
    lines = ["  items by source: " + ", ".join(f"{src} {n}" for src, n in sources.items())]
    skipped = {"prompt", "negative_prompt"}
    few: dict[str, dict[str, list[int]]] = {}  # parameter -> label -> [items, done], while few
    many: dict[str, tuple[set[str], set[int]]] = {}  # parameter -> (labels, integers) once past max_values
    for it in items:
        is_done = it.id in done
        for k, v in it.params.items():
            if k in skipped:
                continue
            seen = many.get(k)
            if seen is not None:
                if v.__class__ is int:
                    seen[1].add(v)
                else:
                    seen[0].add(_label(v))
                continue
            values = few.get(k)
            if values is None:
                values = few[k] = {}
            label = _label(v)
            counted = values.get(label)
            if counted is None:
                if len(values) == max_values:
                    many[k] = (set(values), set())
                    many[k][0].add(label)
                    del few[k]
                    continue
                counted = values[label] = [0, 0]
            counted[0] += 1
            if is_done:
                counted[1] += 1
    for name in sorted((*few, *many)):
        if name in many:
            labels, ints = many[name]
            lines.append(f"  {name}: {len(labels) + len(ints) - _shared(labels, ints)} distinct values")
            continue
        ranked = sorted(few[name].items(), key=lambda kv: kv[1][0], reverse=True)  # stable: first seen first
        lines.append(f"  {name}: " + ", ".join(f"{v} {d}/{n}" for v, (n, d) in ranked))
    return lines


def _shared(labels: set[str], ints: set[int]) -> int:
    """How many integers of ``ints`` are spelled as a label in ``labels`` (counted once, not twice)."""
    if len(labels) <= len(ints):
        return sum(1 for s in labels if s.lstrip("-").isdigit() and str(int(s)) == s and int(s) in ints)
    return sum(1 for i in ints if str(i) in labels)


def _label(v: Any) -> str:
    """A value as the plan shows it (``parameter_counts``'s label)."""
    return v if isinstance(v, str) else value_slug(v) if isinstance(v, dict | list) else str(v)
