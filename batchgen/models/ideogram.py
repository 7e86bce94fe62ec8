"""Ideogram text-to-image (``ideogram-txt-2-img``): the model batchgen was built for, as one entry.

Everything the package knows about Ideogram is here: its parameters and their values, its price
and latency, the image size a ``resolution`` means, the short id part of a resolution and the
parameters the report filters by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from batchgen.models.registry import Filter, ModelSpec, Param, Problem, did_you_mean

__all__ = ["IDEOGRAM", "IDEOGRAM_RESOLUTIONS", "PALETTE_PRESETS", "parse_resolution"]

_HEX = re.compile(r"#[0-9A-Fa-f]{6}")  # fullmatch: "$" would pass "#aabbcc\n"
PALETTE_PRESETS = ("EMBER", "FRESH", "JUNGLE", "MAGIC", "MELON", "MOSAIC", "PASTEL", "ULTRAMARINE")


def _check_color_palette(name: str, value: Any) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(name, "must be an object: {name: PRESET} or {members: [...]}")]
    keys = set(value)
    if keys == {"name"}:
        preset = value["name"]
        if preset not in PALETTE_PRESETS:
            hint = did_you_mean(preset, PALETTE_PRESETS)
            return [Problem(f"{name}.name", f"must be one of {', '.join(PALETTE_PRESETS)}, got {preset!r}{hint}")]
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
            if not isinstance(hexv, str) or not _HEX.fullmatch(hexv):
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
_DEFAULT_RESOLUTION = "RESOLUTION_1024_1024"


def parse_resolution(value: str) -> tuple[int, int]:
    """``RESOLUTION_1024_768`` → ``(1024, 768)``: the sandbox draws it, the worker checks the file."""
    _, w, h = value.split("_")
    return int(w), int(h)


def _image_size(params: Mapping[str, Any]) -> tuple[int, int]:
    return parse_resolution(params.get("resolution") or _DEFAULT_RESOLUTION)


def _resolution_slug(value: Any) -> str:
    """``RESOLUTION_1280_720`` → ``1280x720`` in expanded ids (``fox-anime-1280x720-v1``)."""
    return str(value).removeprefix("RESOLUTION_").replace("_", "x")


IDEOGRAM = ModelSpec(
    slug="ideogram-txt-2-img",
    params=(
        Param("prompt", "string", required=True),
        Param("negative_prompt", "string"),
        Param("magic_prompt_option", "string", choices=("AUTO", "ON", "OFF"), default="AUTO"),
        Param(
            "resolution", "string", choices=IDEOGRAM_RESOLUTIONS, default=_DEFAULT_RESOLUTION,
            slug=_resolution_slug,
        ),
        Param("seed", "integer", minimum=100, maximum=999999),
        Param(
            "style_type",
            "string",
            choices=("GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME"),
            default="GENERAL",
        ),
        Param(
            "color_palette", "object", check=_check_color_palette,
            note="{name: PRESET} with PRESET one of " + ", ".join(PALETTE_PRESETS)
            + "; or {members: [{color_hex: '#RRGGBB', color_weight: 0.05-1.0}, ...]}",
        ),
    ),
    price_usd=0.10,
    typical_latency_s=21.6,
    image_size=_image_size,
    report_filters=(Filter("style", "style_type", "style"), Filter("res", "resolution", "resolution")),
)
