"""A test-only second model, and ``registered(...)`` to add models for the length of a test.

The toy model differs from Ideogram wherever a model can: no ``resolution`` (its size comes from
``aspect_ratio``), its own seed range, its own id spelling and report filter, its own price.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from batchgen.models import MODELS, Filter, ModelSpec, Param, register_model, unregister_model

TOY_SLUG = "toy-txt-2-img"
ASPECT_SIZES = {"1:1": (96, 96), "16:9": (160, 90), "9:16": (90, 160)}
TOY_SEEDS = (1, 4095)


def _toy_size(params: Mapping[str, Any]) -> tuple[int, int]:
    return ASPECT_SIZES[params.get("aspect_ratio", "1:1")]


def toy_model(slug: str = TOY_SLUG) -> ModelSpec:
    return ModelSpec(
        slug=slug,
        params=(
            Param("prompt", "string", required=True),
            Param("aspect_ratio", "string", choices=tuple(ASPECT_SIZES), default="1:1",
                  slug=lambda v: str(v).replace(":", "x")),
            Param("steps", "integer", minimum=1, maximum=50),
            Param("seed", "integer", minimum=TOY_SEEDS[0], maximum=TOY_SEEDS[1]),
        ),
        price_usd=0.02,
        typical_latency_s=3.0,
        image_size=_toy_size,
        report_filters=(Filter("aspect", "aspect_ratio", "aspect ratio"),),
    )


@contextlib.contextmanager
def registered(*specs: ModelSpec) -> Iterator[None]:
    """Register ``specs``; afterwards the registry is exactly as it was (and that is checked)."""
    before = dict(MODELS)
    added: list[str] = []
    try:
        for spec in specs:
            register_model(spec)
            added.append(spec.slug)
        yield
    finally:
        for slug in reversed(added):
            unregister_model(slug)
        assert MODELS == before, "the model registry was not restored"
