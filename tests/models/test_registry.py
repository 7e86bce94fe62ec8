"""The model registry: entries hold every model-specific fact, and adding one is one call."""

from __future__ import annotations

import pytest

from batchgen.models import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LATENCY_S,
    DEFAULT_MODEL,
    IDEOGRAM,
    MODELS,
    UNLISTED_SEED_RANGE,
    Filter,
    ModelSpec,
    Param,
    check_param,
    get_model,
    register_model,
    report_filters,
    typical_latency_s,
    unlisted_slug,
    unregister_model,
    validate_params,
)
from tests.support.models import ASPECT_SIZES, TOY_SEEDS, TOY_SLUG, registered, toy_model


def bare(slug: str = "bare-model", *params: Param, **fields: object) -> ModelSpec:
    return ModelSpec(slug, (Param("prompt", "string", required=True), *params), 0.01, 5.0, **fields)  # type: ignore[arg-type]


def test_ideogram_is_registered_and_the_default() -> None:
    assert DEFAULT_MODEL == IDEOGRAM.slug == "ideogram-txt-2-img"
    assert get_model(DEFAULT_MODEL) is IDEOGRAM
    assert IDEOGRAM.seed_range == (100, 999999)
    assert typical_latency_s(IDEOGRAM.slug) == 21.6


def test_ideogram_entry_holds_its_size_slug_and_filters() -> None:
    assert IDEOGRAM.image_size({"prompt": "x", "resolution": "RESOLUTION_1280_720"}) == (1280, 720)
    assert IDEOGRAM.image_size({"prompt": "x"}) == (1024, 1024)  # the parameter's default
    slug = IDEOGRAM.by_name["resolution"].slug
    assert slug is not None and slug("RESOLUTION_1280_720") == "1280x720"
    assert [(f.key, f.param) for f in IDEOGRAM.report_filters] == [("style", "style_type"), ("res", "resolution")]


def test_register_and_unregister_a_second_model() -> None:
    before = dict(MODELS)
    spec = toy_model()
    assert register_model(spec) is spec
    try:
        assert get_model(TOY_SLUG) is spec
        assert typical_latency_s(TOY_SLUG) == 3.0
        assert spec.seed_range == TOY_SEEDS
        assert spec.image_size({"prompt": "p", "aspect_ratio": "16:9"}) == ASPECT_SIZES["16:9"]
        assert validate_params(spec, {"prompt": "p", "aspect_ratio": "4:3"})[0].message.startswith("must be one of 1:1")
        assert validate_params(spec, {"prompt": "p", "resolution": "RESOLUTION_1024_1024"})[0].field == "resolution"
        assert validate_params(spec, {"prompt": "p", "aspect_ratio": "9:16", "seed": 4095, "steps": 50}) == []
    finally:
        assert unregister_model(TOY_SLUG) is spec
    assert MODELS == before and get_model(TOY_SLUG) is None


def test_registered_restores_the_registry_even_after_an_error() -> None:
    before = dict(MODELS)
    with pytest.raises(RuntimeError), registered(toy_model()):
        raise RuntimeError("boom")
    assert MODELS == before


def test_a_slug_cannot_be_registered_twice() -> None:
    with registered(toy_model()):
        with pytest.raises(ValueError, match="already registered"):
            register_model(toy_model())
    with pytest.raises(ValueError, match="already registered"):
        register_model(IDEOGRAM)
    assert get_model(IDEOGRAM.slug) is IDEOGRAM


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (ModelSpec("no-prompt", (Param("text", "string"),), 0.0, 1.0), "no prompt parameter"),
        (bare("f1", report_filters=(Filter("size", "size", "size"),)), "unknown parameter 'size'"),
        (bare("f2", Param("mode", "string"), report_filters=(Filter("state", "mode", "mode"),)), "'state'"),
        (bare("f3", Param("mode", "string"), report_filters=(Filter("a b", "mode", "mode"),)), "'a b'"),
    ],
)
def test_broken_entries_are_refused(spec: ModelSpec, fragment: str) -> None:
    before = dict(MODELS)
    with pytest.raises(ValueError, match=fragment):
        register_model(spec)
    assert MODELS == before


def test_defaults_for_what_an_entry_does_not_say() -> None:
    spec = bare("no-extras")
    assert spec.image_size({"prompt": "p"}) == DEFAULT_IMAGE_SIZE
    assert spec.seed_range is None  # no seed parameter: no variants
    assert spec.report_filters == ()
    assert bare("open-seed", Param("seed", "integer")).seed_range == (0, 2**31 - 1)
    assert typical_latency_s("not-registered") == DEFAULT_LATENCY_S


def test_unlisted_models_keep_the_id_spelling_they_always_had() -> None:
    assert UNLISTED_SEED_RANGE == (100, 999_999)
    assert unlisted_slug("RESOLUTION_1280_720") == "1280x720"
    assert unlisted_slug("ANIME") is None and unlisted_slug(5) is None


def test_report_filters_follow_the_registered_entries() -> None:
    assert [f.param for f in report_filters()] == ["style_type", "resolution"]
    other = bare("other", Param("style_type", "string"), report_filters=(Filter("style2", "style_type", "x"),))
    with registered(toy_model(), other):
        # one filter per parameter, the first entry's wins
        assert [(f.key, f.param) for f in report_filters()] == [
            ("style", "style_type"), ("res", "resolution"), ("aspect", "aspect_ratio")]
    assert [f.param for f in report_filters()] == ["style_type", "resolution"]


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (Param("n", "integer", minimum=1), 0, "must be at least 1, got 0"),
        (Param("n", "integer", maximum=9), 10, "must be at most 9, got 10"),
        (Param("n", "number", minimum=0.5, maximum=2), 3, "must be between 0.5 and 2, got 3"),
        (Param("n", "boolean"), 1, "must be a boolean, got 1"),
        (Param("n", "object"), [], "must be an object, got []"),
    ],
)
def test_check_param_messages(param: Param, value: object, message: str) -> None:
    spec = bare("msg", param)
    assert [str(p) for p in check_param(spec, "n", value)] == [f"n: {message}"]
