"""Model rules as data: every model-specific fact lives in the model's entry.

``registry`` holds the machinery (``ModelSpec``, ``register_model``, the parameter checks); each
model is one module holding its entry, registered here.
"""

from batchgen.models.ideogram import IDEOGRAM, IDEOGRAM_RESOLUTIONS, parse_resolution
from batchgen.models.registry import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LATENCY_S,
    MODELS,
    UNLISTED_SEED_RANGE,
    Filter,
    ModelSpec,
    Param,
    Problem,
    check_param,
    did_you_mean,
    get_model,
    register_model,
    report_filters,
    suggest,
    typical_latency_s,
    unlisted_model,
    unlisted_slug,
    unregister_model,
    validate_params,
)

register_model(IDEOGRAM)

# The model of a manifest that names none.
DEFAULT_MODEL = IDEOGRAM.slug

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_LATENCY_S",
    "DEFAULT_MODEL",
    "IDEOGRAM",
    "IDEOGRAM_RESOLUTIONS",
    "MODELS",
    "UNLISTED_SEED_RANGE",
    "Filter",
    "ModelSpec",
    "Param",
    "Problem",
    "check_param",
    "did_you_mean",
    "get_model",
    "parse_resolution",
    "register_model",
    "report_filters",
    "suggest",
    "typical_latency_s",
    "unlisted_model",
    "unlisted_slug",
    "unregister_model",
    "validate_params",
]
