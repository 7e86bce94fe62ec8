"""Parameter rules of each known model, as data.

The manifest loader and the sandbox both check parameters against these tables, so a user learns
about a bad value before any money is at stake and the emulator rejects exactly what the real
service rejects. A second model is a new table entry, not new code. Parameters of an unknown slug
pass through unchecked (the caller warns).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODELS",
    "IDEOGRAM_RESOLUTIONS",
    "ModelSpec",
    "Param",
    "Problem",
    "get_model",
    "parse_resolution",
    "validate_params",
]


@dataclass(frozen=True)
class Problem:
    """One broken rule: ``field`` is a dotted path such as ``color_palette.members[0].color_hex``."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


Checker = Callable[[str, Any], list[Problem]]


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "string" | "integer" | "number" | "boolean" | "object"
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    check: Checker | None = None


@dataclass(frozen=True)
class ModelSpec:
    slug: str
    params: tuple[Param, ...]
    price_usd: float
    typical_latency_s: float
    by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})


_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")
PALETTE_PRESETS = ("EMBER", "FRESH", "JUNGLE", "MAGIC", "MELON", "MOSAIC", "PASTEL", "ULTRAMARINE")


def _check_color_palette(name: str, value: Any) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(name, "must be an object: {name: PRESET} or {members: [...]}")]
    keys = set(value)
    if keys == {"name"}:
        preset = value["name"]
        if preset not in PALETTE_PRESETS:
            return [Problem(f"{name}.name", f"must be one of {', '.join(PALETTE_PRESETS)}, got {preset!r}")]
        return []
    if keys == {"members"}:
        members = value["members"]
        if not isinstance(members, list) or not members:
            return [Problem(f"{name}.members", "must be a non-empty list of {color_hex, color_weight}")]
        problems: list[Problem] = []
        for i, m in enumerate(members):
            path = f"{name}.members[{i}]"
            if not isinstance(m, dict):
                problems.append(Problem(path, "must be an object with color_hex and color_weight"))
                continue
            extra = set(m) - {"color_hex", "color_weight"}
            if extra:
                problems.append(Problem(f"{path}.{sorted(extra)[0]}", "unknown key"))
            hexv = m.get("color_hex")
            if not isinstance(hexv, str) or not _HEX.match(hexv):
                problems.append(Problem(f"{path}.color_hex", f"must be '#RRGGBB', got {hexv!r}"))
            w = m.get("color_weight")
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0.05 <= w <= 1.0:
                problems.append(Problem(f"{path}.color_weight", f"must be a number in 0.05-1.0, got {w!r}"))
        return problems
    return [Problem(name, "must be either {name: PRESET} or {members: [...]}, not both or neither")]


IDEOGRAM_RESOLUTIONS: tuple[str, ...] = tuple(
    f"RESOLUTION_{wh}"
    for wh in """
    512_1536 576_1408 576_1472 576_1536 640_1024 640_1344 640_1408 640_1472 640_1536 704_1152
    704_1216 704_1280 704_1344 704_1408 704_1472 720_1280 736_1312 768_1024 768_1088 768_1152
    768_1216 768_1232 768_1280 768_1344 832_960 832_1024 832_1088 832_1152 832_1216 832_1248
    864_1152 896_960 896_1024 896_1088 896_1120 896_1152 960_832 960_896 960_1024 960_1088
    1024_640 1024_768 1024_832 1024_896 1024_960 1024_1024 1088_768 1088_832 1088_896 1088_960
    1120_896 1152_704 1152_768 1152_832 1152_864 1152_896 1216_704 1216_768 1216_832 1232_768
    1248_832 1280_704 1280_720 1280_768 1280_800 1312_736 1344_640 1344_704 1344_768 1408_576
    1408_640 1408_704 1472_576 1472_640 1472_704 1536_512 1536_576 1536_640
    """.split()
)
assert len(IDEOGRAM_RESOLUTIONS) == 78


def parse_resolution(value: str) -> tuple[int, int]:
    """``RESOLUTION_1024_768`` → ``(1024, 768)``: the sandbox draws it, the worker checks the file."""
    _, w, h = value.split("_")
    return int(w), int(h)


IDEOGRAM = ModelSpec(
    slug="ideogram-txt-2-img",
    params=(
        Param("prompt", "string", required=True),
        Param("negative_prompt", "string"),
        Param("magic_prompt_option", "string", choices=("AUTO", "ON", "OFF"), default="AUTO"),
        Param("resolution", "string", choices=IDEOGRAM_RESOLUTIONS, default="RESOLUTION_1024_1024"),
        Param("seed", "integer", minimum=100, maximum=999999),
        Param(
            "style_type",
            "string",
            choices=("GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME"),
            default="GENERAL",
        ),
        Param("color_palette", "object", check=_check_color_palette),
    ),
    price_usd=0.10,
    typical_latency_s=21.6,
)

MODELS: dict[str, ModelSpec] = {IDEOGRAM.slug: IDEOGRAM}


def get_model(slug: str) -> ModelSpec | None:
    return MODELS.get(slug)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return True


def check_param(spec: ModelSpec, name: str, value: Any) -> list[Problem]:
    """Check one parameter; lets the manifest loader point at the exact line of the bad value."""
    p = spec.by_name.get(name)
    if p is None:
        return [Problem(name, f"unknown parameter for {spec.slug} (known: {', '.join(spec.by_name)})")]
    if not _type_ok(p.kind, value):
        return [Problem(name, f"must be {'an' if p.kind[0] in 'aeiou' else 'a'} {p.kind}, got {value!r}")]
    if p.kind == "string" and p.required and not value.strip():
        return [Problem(name, "must not be empty")]
    if p.choices is not None and value not in p.choices:
        if len(p.choices) > 8:
            return [Problem(name, f"unsupported value {value!r} (see the model's list of {len(p.choices)} values)")]
        return [Problem(name, f"must be one of {', '.join(p.choices)}, got {value!r}")]
    if p.minimum is not None and value < p.minimum or p.maximum is not None and value > p.maximum:
        return [Problem(name, f"must be between {p.minimum:g} and {p.maximum:g}, got {value!r}")]
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
