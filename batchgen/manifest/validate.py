"""The one validator of manifest entries: inline YAML items and prompts-file rows alike.

An entry is a plain mapping (a prompt, parameters, and optionally ``id``, ``matrix``,
``variants``, ``id_template``). Where it was written is an ``Origin``: a field prefix and a
callback ``locate(field) -> (file, line)``. A YAML item locates a field by walking its nodes; a
prompts-file row answers its own line for every field. So both are held to the same rules, and
both report ``file:line: field: message`` before any request costs money. Every mistake of an
entry goes to the manifest's ``Mistakes``, and the entry is left out; the loader goes on.

Beyond the model's rules, every string sent is held to two of its own: at most
``MAX_TEXT_CHARS`` characters, and no control character but newline and tab (a stray escape or
form feed in a prompt is a mistake, and would reach the terminal in messages).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from batchgen.core.fastjson import canonical_json
from batchgen.models import (
    UNLISTED_SEED_RANGE,
    ModelSpec,
    Problem,
    check_param,
    unlisted_model,
    validate_params,
)

from . import expand as X
from .ids import IdBook
from .mistakes import Mistakes
from .types import ManifestError

__all__ = [
    "ENTRY_KEYS",
    "INHERIT",
    "MAX_TEXT_CHARS",
    "MAX_VARIANTS",
    "ROWS",
    "YAML",
    "Dialect",
    "Locate",
    "Origin",
    "Raw",
    "Rules",
    "number_problem",
    "text_problems",
]

ENTRY_KEYS = ("matrix", "variants", "id_template")  # entry keys that shape expansion, not the request
_ENTRY_KEY_SET = frozenset(ENTRY_KEYS)
MAX_VARIANTS = 10_000
MAX_TEXT_CHARS = 10_000  # a prompt (or any string parameter) longer than this is a mistake
INHERIT: Any = object()  # an entry that does not set variants / id_template takes the top level's

Locate = Callable[[str], tuple[str, int]]  # field, relative to the entry -> (file, line)
_TOP_FIELD = re.compile(r"[^.\[\]]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls but tab and newline


@dataclass(frozen=True)
class Dialect:
    """The same rule in the words of the file it was broken in (a YAML mapping, a JSON object)."""

    collection: str
    more_prompts: str


YAML = Dialect("a mapping", "list prompts as items or in a prompts_file")
ROWS = Dialect("an object", "list prompts as rows")


class Origin(NamedTuple):
    """Where an entry (or the top level, or ``defaults``) was written."""

    prefix: str  # "items[3]", "defaults", or "" for the top level and prompts-file rows
    locate: Locate
    dialect: Dialect = YAML

    def field(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ManifestError:
        file, line = self.locate(name)
        return ManifestError(file, line, self.field(name), message)


@dataclass(slots=True)
class Raw:
    """An entry that passed every rule, before ids are settled and matrix and variants expanded.

    ``build`` settles it in place (its id, axes, variants and template); a million rows hold a
    million of these until every id is settled, hence slots and the index instead of its text.
    """

    id: str | None
    params: dict[str, Any]
    own: frozenset[str]
    line: int
    source: str | None  # prompts file shown in messages; None for the manifest
    axes: tuple[X.Axis, ...]
    variants: Any  # int, None (none) or INHERIT
    template: Any  # str, None or INHERIT
    index: int | None  # position in the manifest's ``items``; None for a prompts-file row

    @property
    def where(self) -> str:
        """The field prefix in messages: ``items[3]``, or "" for a prompts-file row."""
        return "" if self.index is None else f"items[{self.index}]"


def number_problem(v: Any, *, integer: bool, low: float, low_open: bool) -> str | None:
    """Why ``v`` is not a number (an integer) at least ``low`` (greater than it), or None."""
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        return f"must be {'an integer' if integer else 'a number'}, got {v!r}"
    if v < low or (low_open and v == low):
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        return f"must be {bound}, got {v!r}"
    return None


def text_problems(field: str, value: Any) -> list[Problem]:
    """Why a string in ``value`` (nested ones too) cannot be sent: too long, or a control character."""
    if isinstance(value, str):
        out = []
        if len(value) > MAX_TEXT_CHARS:
            out.append(Problem(field, f"is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}"))
        if not value.isprintable():  # fast for the usual text; the search says which
            m = _CONTROL.search(value)
            if m:
                code = f"U+{ord(m.group()):04X}"
                out.append(Problem(field, f"contains the control character {code}; only newline and tab are allowed"))
        return out
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in text_problems(f"{field}.{k}", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in text_problems(f"{field}[{i}]", v)]
    return []


class Rules:
    """The rules of one manifest: its model, its defaults, its top-level axes and the ids taken.

    Mistakes go to ``mistakes``; without one, the first is raised (as a single check wants).
    """

    def __init__(self, path: str, model: str, spec: ModelSpec | None, mistakes: Mistakes | None = None) -> None:
        self.path = path
        self.mistakes = mistakes if mistakes is not None else Mistakes(path, fail_fast=True)
        self.spec = spec
        self.known = spec is not None
        self.checker = spec if spec is not None else unlisted_model(model)
        self.seeds = spec.seed_range if spec is not None else UNLISTED_SEED_RANGE
        self.ids = IdBook(path)
        self.defaults: dict[str, Any] = {}
        self.defaults_origin: Origin | None = None
        self.axes: tuple[X.Axis, ...] = ()
        self.variants: int | None = None
        self.template: str | None = None
        self.shape_ok = True  # the top level's matrix, variants and id_template passed
        self._owns: dict[tuple[str, ...], frozenset[str]] = {}

    # -- the top level ------------------------------------------------------------------------

    def set_defaults(self, values: dict[str, Any], origin: Origin) -> None:
        for k, v in values.items():
            if k == "id":
                self.mistakes.add(origin.error("id", "ids are per item and cannot be set in defaults"))
                continue
            problems = check_param(self.checker, k, v) if self.known or k == "prompt" else []
            for p in problems + text_problems(k, v):
                self.mistakes.add(origin.error(p.field, p.message))
        self.defaults = {k: v for k, v in values.items() if k != "id"}
        self.defaults_origin = origin

    def set_shape(self, matrix: Any, variants: Any, template: Any, origin: Origin) -> None:
        """The top level's matrix, variants and id_template: what an entry inherits."""
        before = self.mistakes.count
        with self.mistakes.caught():
            self.axes = self.matrix(matrix, origin)
        with self.mistakes.caught():
            self.variants = self.check_variants(variants, origin)
        with self.mistakes.caught():
            self.template = self.check_template(template, origin)
        self.shape_ok = self.mistakes.count == before

    # -- one entry ----------------------------------------------------------------------------

    def entry(
        self, values: Mapping[str, Any], origin: Origin, line: int, source: str | None, index: int | None = None
    ) -> Raw | None:
        """Check an inline item or a prompts-file row; None when it broke a rule (each one recorded).

        ``index``: the item's position in ``items`` (None for a row). A plain ``dict`` of values
        becomes the item's parameters once ``id``, ``matrix``, ``variants`` and ``id_template`` are
        taken out of it: the caller gives it away (a million rows, a million dicts not copied).
        """
        shape: dict[str, Any] = {}
        item_id: str | None = None
        errors: list[ManifestError] = []
        own: dict[str, Any] = values if values.__class__ is dict else dict(values)  # type: ignore[assignment]
        if "id" in own or not _ENTRY_KEY_SET.isdisjoint(own):
            for k in [k for k in own if k == "id" or k in _ENTRY_KEY_SET]:  # the rest stay in written order
                v = own.pop(k)
                if k == "id":
                    try:
                        item_id = self._claim(v, origin)
                    except ManifestError as e:
                        errors.append(e)
                else:
                    shape[k] = v
        params = {**self.defaults, **own} if self.defaults else own
        problems = self._problems(params)
        for k, v in own.items():
            c = v.__class__
            if c is str:
                if len(v) > MAX_TEXT_CHARS or not v.isprintable():
                    problems.extend(text_problems(k, v))
            elif not (c is int or c is float or c is bool or v is None):  # these hold no text
                problems.extend(text_problems(k, v))
        for p in problems:
            m = _TOP_FIELD.match(p.field)
            top = m.group(0) if m else p.field
            if top not in own and top in self.defaults and self.defaults_origin is not None:
                errors.append(self.defaults_origin.error(p.field, p.message))
            else:
                errors.append(origin.error(p.field, p.message))
        axes = self.axes
        variants: Any = INHERIT
        template: Any = INHERIT
        if shape:
            try:
                if "matrix" in shape:
                    axes = _merge_axes(axes, self.matrix(shape["matrix"], origin))
            except ManifestError as e:
                errors.append(e)
            try:
                if "variants" in shape:
                    variants = self.check_variants(shape["variants"], origin)
            except ManifestError as e:
                errors.append(e)
            try:
                if "id_template" in shape:
                    template = self.check_template(shape["id_template"], origin)
            except ManifestError as e:
                errors.append(e)
        if errors:
            for e in errors:
                self.mistakes.add(e)
            return None
        return Raw(item_id, params, self._own(own), line, source, axes, variants, template, index)

    def _own(self, own: dict[str, Any]) -> frozenset[str]:
        """The keys an entry set itself; entries mostly set the same few, so one frozenset serves them."""
        key = tuple(own)
        found = self._owns.get(key)
        if found is None:
            found = frozenset(key)
            if len(self._owns) < 4096:
                self._owns[key] = found
        return found

    def _claim(self, value: Any, origin: Origin) -> str:
        file, line = origin.locate("id")
        try:
            return self.ids.claim(value, file, line)
        except ValueError as e:
            raise origin.error("id", str(e)) from None

    def _problems(self, params: Mapping[str, Any]) -> list[Problem]:
        """Every rule of a known model; for an unknown one only the prompt, the rest passes through."""
        if self.known:
            return validate_params(self.checker, params)
        return validate_params(self.checker, {"prompt": params["prompt"]} if "prompt" in params else {})

    # -- matrix, variants, id_template -------------------------------------------------------

    def matrix(self, raw: Any, origin: Origin) -> tuple[X.Axis, ...]:
        if raw is None:
            return ()
        words = origin.dialect
        if not isinstance(raw, dict):
            raise origin.error("matrix", f"must be {words.collection} of parameter: [value, value, ...]")
        out: list[X.Axis] = []
        for k, values in raw.items():
            f = f"matrix.{k}"
            if k in ("prompt", "id"):
                raise origin.error(f, f"cannot be a matrix axis: {words.more_prompts}")
            if not isinstance(values, list) or not values:
                raise origin.error(f, "must be a non-empty list of values")
            seen: dict[str, int] = {}
            for i, val in enumerate(values):
                fi = f"{f}[{i}]"
                problems = check_param(self.checker, k, val) if self.known else []
                problems += text_problems(k, val)
                if problems:
                    field = problems[0].field
                    sub = field[len(k) :] if field.startswith(k) else ""
                    raise origin.error(fi + sub, problems[0].message)
                key = canonical_json(val)
                if key in seen:
                    raise origin.error(fi, f"duplicate value (same as {origin.field(f)}[{seen[key]}])")
                seen[key] = i
            out.append((k, tuple(values)))
        return tuple(out)

    def check_variants(self, value: Any, origin: Origin) -> int | None:
        if value is None:
            return None
        why = number_problem(value, integer=True, low=1, low_open=False)
        if why:
            raise origin.error("variants", why)
        if value > MAX_VARIANTS:
            raise origin.error("variants", f"must be at most {MAX_VARIANTS}, got {value}")
        if self.seeds is None:
            raise origin.error(
                "variants", f"variants differ by seed, and {self.checker.slug} has no seed parameter: use a matrix"
            )
        return int(value)

    def check_template(self, value: Any, origin: Origin) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise origin.error("id_template", f"must be a non-empty string, got {value!r}")
        why = X.template_fields(value)
        if isinstance(why, str):
            raise origin.error("id_template", why)
        return value


def _merge_axes(base: tuple[X.Axis, ...], own: tuple[X.Axis, ...]) -> tuple[X.Axis, ...]:
    """An entry's matrix replaces the top level's list for the same parameter and adds new ones."""
    mine = dict(own)
    merged = [(n, mine.pop(n, vs)) for n, vs in base]
    merged.extend(mine.items())
    return tuple(merged)
