"""The machinery of the model registry: what a model entry holds, how parameters are checked.

The manifest loader, the sandbox, the run planner and the report all ask the registry instead of
knowing a model themselves, so a second model is one ``register_model(ModelSpec(...))`` (see
``ideogram.py`` for a full entry), not edits across the package. Parameters of an unknown slug
pass through unchecked (the caller warns).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_LATENCY_S",
    "MODELS",
    "UNLISTED_SEED_RANGE",
    "Filter",
    "Kind",
    "ModelSpec",
    "Param",
    "Problem",
    "check_param",
    "did_you_mean",
    "get_model",
    "register_model",
    "report_filters",
    "suggest",
    "typical_latency_s",
    "unlisted_model",
    "unlisted_slug",
    "unregister_model",
    "validate_params",
]

# What the worker assumes of a slug no entry describes.
DEFAULT_LATENCY_S = 20.0
DEFAULT_IMAGE_SIZE = (1024, 1024)
# Variant seeds of an unlisted model: the range they were always drawn from, so that an existing
# output folder of such a model resumes with the same seeds (and so the same ids and requests).
UNLISTED_SEED_RANGE = (100, 999_999)
_FILTER_KEY = re.compile(r"[a-z][a-z0-9_]*")  # an HTML id part and a URL fragment key
_SEED_FLOOR, _SEED_CEILING = 0, 2**31 - 1  # a seed parameter that states no bounds


@dataclass(frozen=True)
class Problem:
    """One broken rule: ``field`` is a dotted path such as ``color_palette.members[0].color_hex``."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


Checker = Callable[[str, Any], list[Problem]]
Kind = Literal["string", "integer", "number", "boolean", "object"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    check: Checker | None = None
    # The short id part for a value (``RESOLUTION_1280_720`` -> ``1280x720``); None: the generic one.
    slug: Callable[[Any], str] | None = None
    # What a value must look like where kind, choices and bounds cannot say it (an object's shape),
    # for ``batchgen models SLUG``.
    note: str = ""


@dataclass(frozen=True)
class Filter:
    """A parameter the HTML report offers as a filter; ``key`` names it in the page's URL (#key=value)."""

    key: str
    param: str
    label: str


def _no_size_parameter(params: Mapping[str, Any]) -> tuple[int, int]:
    return DEFAULT_IMAGE_SIZE


@dataclass(frozen=True)
class ModelSpec:
    """Everything model-specific, as data: adding a model adds one of these and nothing else."""

    slug: str
    params: tuple[Param, ...]
    price_usd: float
    typical_latency_s: float
    # Width and height of the image the service draws for a request (the sandbox draws exactly that).
    image_size: Callable[[Mapping[str, Any]], tuple[int, int]] = _no_size_parameter
    report_filters: tuple[Filter, ...] = ()
    by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})

    @property
    def seed_range(self) -> tuple[int, int] | None:
        """Bounds of the ``seed`` parameter, where variant seeds are drawn; None: it has no seed."""
        p = self.by_name.get("seed")
        if p is None:
            return None
        low = _SEED_FLOOR if p.minimum is None else int(p.minimum)
        high = _SEED_CEILING if p.maximum is None else int(p.maximum)
        return low, high


def unlisted_model(slug: str) -> ModelSpec:
    """The one rule that holds for any model, a prompt: what the loader checks of an unlisted slug."""
    return ModelSpec(slug=slug, params=(Param("prompt", "string", required=True),), price_usd=0.0, typical_latency_s=0.0)


def unlisted_slug(value: Any) -> str | None:
    """How ids spell a value of an unlisted model where the generic id part would differ.

    Before models were entries, every ``RESOLUTION_W_H`` string became ``WxH`` in ids, whatever
    the model. An unlisted model keeps that spelling: an id is what a resume recognises, so a
    changed spelling would submit (and pay for) an existing output folder's items again.
    """
    if isinstance(value, str) and value.startswith("RESOLUTION_"):
        return value[len("RESOLUTION_") :].replace("_", "x")
    return None


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model; a slug already registered is refused, so one entry can never shadow another."""
    if spec.slug in MODELS:
        raise ValueError(f"model {spec.slug!r} is already registered")
    if "prompt" not in spec.by_name:
        raise ValueError(f"model {spec.slug!r} has no prompt parameter")
    for f in spec.report_filters:
        if f.param not in spec.by_name:
            raise ValueError(f"model {spec.slug!r}: report filter on unknown parameter {f.param!r}")
        if not _FILTER_KEY.fullmatch(f.key) or f.key == "state":
            raise ValueError(f"model {spec.slug!r}: report filter key {f.key!r} must be [a-z][a-z0-9_]*, not 'state'")
    MODELS[spec.slug] = spec
    return spec


def unregister_model(slug: str) -> ModelSpec:
    """Remove a model (tests that register their own put the registry back this way)."""
    return MODELS.pop(slug)


def get_model(slug: str) -> ModelSpec | None:
    return MODELS.get(slug)


def suggest(word: str, options: Iterable[str]) -> str | None:
    """The option ``word`` was most likely meant to be (case aside, then by spelling), or None.

    None too when two options are equally close: a guess between them would mislead.
    """
    folded: dict[str, str] = {}
    for o in options:
        folded.setdefault(o.casefold(), o)
    w = word.casefold()
    if w in folded:
        return folded[w]
    if len(w) > 200:  # nobody mistypes that much; and difflib's cost grows with the length
        return None
    scored = [(difflib.SequenceMatcher(None, w, f).ratio(), f) for f in folded]
    scored.sort(key=lambda t: t[0], reverse=True)
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return folded[scored[0][1]]


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` to end a message with, or "" when nothing is close."""
    if not isinstance(word, str):
        return ""
    s = suggest(word, options)
    return f"; did you mean {s!r}?" if s is not None and s != word else ""


def typical_latency_s(slug: str) -> float:
    """Seconds a request usually takes: the entry's figure, or a guess for an unlisted slug."""
    spec = MODELS.get(slug)
    return spec.typical_latency_s if spec is not None else DEFAULT_LATENCY_S


def report_filters() -> tuple[Filter, ...]:
    """The report filters of every registered model, first entry first, one per parameter.

    A ledger does not record its model, so the report offers each filter whose parameter it finds.
    """
    seen: dict[str, Filter] = {}
    for spec in MODELS.values():
        for f in spec.report_filters:
            seen.setdefault(f.param, f)
    return tuple(seen.values())


def _type_ok(kind: Kind, value: Any) -> bool:
    match kind:
        case "string":
            return isinstance(value, str)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case "object":
            return isinstance(value, dict)
        case _:
            assert_never(kind)


def check_param(spec: ModelSpec, name: str, value: Any) -> list[Problem]:
    """Check one parameter; lets the manifest loader point at the exact line of the bad value."""
    p = spec.by_name.get(name)
    if p is None:
        hint = did_you_mean(name, spec.by_name)
        return [Problem(name, f"unknown parameter for {spec.slug}{hint} (known: {', '.join(spec.by_name)})")]
    if not _type_ok(p.kind, value):
        return [Problem(name, f"must be {'an' if p.kind[0] in 'aeiou' else 'a'} {p.kind}, got {value!r}")]
    if p.kind == "string" and p.required and not value.strip():
        return [Problem(name, "must not be empty")]
    if p.choices is not None and value not in p.choices:
        hint = did_you_mean(value, p.choices)
        if len(p.choices) > 8:
            listed = f"`batchgen models {spec.slug}` lists the {len(p.choices)} values"
            return [Problem(name, f"unsupported value {value!r}{hint} ({listed})")]
        return [Problem(name, f"must be one of {', '.join(p.choices)}, got {value!r}{hint}")]
    low, high = p.minimum, p.maximum
    if low is not None and value < low or high is not None and value > high:
        if low is None or high is None:
            bound = f"at least {low:g}" if high is None else f"at most {high:g}"
            return [Problem(name, f"must be {bound}, got {value!r}")]
        return [Problem(name, f"must be between {low:g} and {high:g}, got {value!r}")]
    if p.check is not None:
        return p.check(name, value)
    return []


def validate_params(spec: ModelSpec, params: Mapping[str, Any]) -> list[Problem]:
    """Every broken rule of ``params``, in parameter order; empty when the request is acceptable."""
    problems: list[Problem] = []
    for p in spec.params:
        if p.required and p.name not in params:
            problems.append(Problem(p.name, "is required"))
    for name, value in params.items():
        problems.extend(check_param(spec, name, value))
    return problems
