"""Model rules as data: every model-specific fact lives in the model's entry."""

from batchgen.models.registry import (
    IDEOGRAM_RESOLUTIONS,
    MODELS,
    ModelSpec,
    Param,
    Problem,
    check_param,
    get_model,
    parse_resolution,
    validate_params,
)

__all__ = [
    "IDEOGRAM_RESOLUTIONS",
    "MODELS",
    "ModelSpec",
    "Param",
    "Problem",
    "check_param",
    "get_model",
    "parse_resolution",
    "validate_params",
]
