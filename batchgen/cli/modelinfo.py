"""``batchgen models``: the known models, and one model's parameters with every value it takes.

A manifest mistake such as an unsupported ``resolution`` points here, so the values a user needs
are one command away instead of in the source or the service's documentation.
"""

from __future__ import annotations

import textwrap

from batchgen.core.errors import UserError
from batchgen.manifest.validate import MAX_TEXT_CHARS
from batchgen.models import DEFAULT_MODEL, MODELS, ModelSpec, Param, get_model, suggest

__all__ = ["describe_model", "list_models"]

_WIDTH = 100


def list_models() -> list[str]:
    """One line per registered model: slug, price, typical time per image."""
    width = max((len(s) for s in MODELS), default=0)
    lines = ["Known models (price per image, typical time per image):"]
    for slug, spec in MODELS.items():
        mark = "  (the default)" if slug == DEFAULT_MODEL else ""
        lines.append(f"  {slug:<{width}}  ${spec.price_usd:.2f}  ~{spec.typical_latency_s:.0f} s{mark}")
    lines.append("A model's parameters and their values: batchgen models SLUG")
    lines.append("Any other slug is sent as written, its parameters unchecked (only the prompt is).")
    return lines


def describe_model(slug: str) -> list[str]:
    """Price, typical latency and each parameter: type, bounds, choices, default, shape."""
    spec = get_model(slug)
    if spec is None:
        near = suggest(slug, MODELS)
        hint = f"; did you mean {near!r}?" if near else ""
        raise UserError(f"unknown model {slug!r}{hint} (`batchgen models` lists the known models)")
    return _describe(spec)


def _describe(spec: ModelSpec) -> list[str]:
    mark = " (the default model)" if spec.slug == DEFAULT_MODEL else ""
    lines = [
        f"{spec.slug}{mark}",
        f"  price: ${spec.price_usd:.2f} per image (a manifest's price_usd overrides it)",
        f"  typical time per image: {spec.typical_latency_s:g} s",
        "  parameters:",
    ]
    width = max(len(p.name) for p in spec.params) + 2
    for p in spec.params:
        head = f"    {p.name:<{width}}"
        text = _param(p)
        wrapped = textwrap.wrap(text, _WIDTH - len(head), break_on_hyphens=False) or [""]
        lines.append(head + wrapped[0])
        lines.extend(" " * len(head) + more for more in wrapped[1:])
    lines.append(
        f"  every string: at most {MAX_TEXT_CHARS} characters, no control characters but newline and tab"
    )
    return lines


def _param(p: Param) -> str:
    parts = [p.kind + (", required" if p.required else "")]
    if p.minimum is not None and p.maximum is not None:
        parts.append(f"{p.minimum:g} to {p.maximum:g}")
    elif p.minimum is not None:
        parts.append(f"at least {p.minimum:g}")
    elif p.maximum is not None:
        parts.append(f"at most {p.maximum:g}")
    if p.default is not None:
        parts.append(f"default {p.default}")
    text = ", ".join(parts)
    if p.choices is not None:
        text += f"; one of {len(p.choices)}: " + " ".join(p.choices)
    if p.note:
        text += f"; {p.note}"
    return text
