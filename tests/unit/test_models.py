"""The model family table: order, coverage, and every family's input against the schema
snapshot the fake Replicate validates with (devstack/fake_replicate/schemas)."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.fake_replicate import schemas
from worker.replicate.inputs import BUILDERS, GenerationRequest, build_input, resolve_version
from worker.replicate.models import FAMILIES, GENERIC, Family, match_family

SOURCE = "data:image/png;base64,iVBORw0KGgo="

# One row per family: a model of that family with a schema snapshot.
ROWS: list[tuple[Family, str]] = [
    (Family.FLUX_SCHNELL, "black-forest-labs/flux-schnell"),
    (Family.FLUX_DEV, "black-forest-labs/flux-dev"),
    (Family.FLUX_DEV, "black-forest-labs/flux-krea-dev"),
    (Family.IDEOGRAM, "ideogram-ai/ideogram-v3-turbo"),
    (Family.IMAGEN, "google/imagen-4-fast"),
    (Family.SDXL_LIGHTNING, "bytedance/sdxl-lightning-4step"),
    (Family.SDXL, "stability-ai/sdxl"),
    (Family.SEEDREAM_4, "bytedance/seedream-4"),
    (Family.SEEDREAM_3, "bytedance/seedream-3"),
    (Family.FLUX_PRO, "black-forest-labs/flux-1.1-pro"),
    (Family.RECRAFT_SVG, "recraft-ai/recraft-v3-svg"),
    (Family.RECRAFT, "recraft-ai/recraft-v3"),
    (Family.SD35, "stability-ai/stable-diffusion-3.5-large"),
    (Family.QWEN, "qwen/qwen-image"),
]

# Request shapes a client may send (start-generation fills 30 steps / 7.5 guidance).
SHAPES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "spec-defaults": {"num_inference_steps": 30, "guidance_scale": 7.5},
    "landscape": {"width": 1920, "height": 1080, "num_inference_steps": 50,
                  "guidance_scale": 12.0, "seed": 42, "negative_prompt": "blurry"},
    "portrait": {"width": 768, "height": 1344, "num_inference_steps": 4, "seed": 0},
    "tiny": {"width": 64, "height": 64, "num_inference_steps": 1, "guidance_scale": 0.0},
    "huge": {"width": 8192, "height": 8192, "num_inference_steps": 1000,
             "guidance_scale": 100.0, "seed": 2**40},
    "extreme-ratio": {"width": 4000, "height": 250},
    "img2img": {"source_image": SOURCE, "strength": 0.35, "guidance_scale": 3.0},
}


def test_the_table_is_in_spec_order() -> None:
    assert [f.name for f in FAMILIES] == [
        Family.FLUX_SCHNELL, Family.FLUX_DEV, Family.IDEOGRAM, Family.IMAGEN,
        Family.SDXL_LIGHTNING, Family.SDXL, Family.SEEDREAM_4, Family.SEEDREAM_3,
        Family.FLUX_PRO, Family.RECRAFT_SVG, Family.RECRAFT, Family.SD35, Family.QWEN,
    ]
    assert {f.name for f in FAMILIES} | {GENERIC.name} == set(Family) == set(BUILDERS)


def test_no_row_shadows_a_later_rows_examples() -> None:
    for family in FAMILIES:
        assert family.examples, family.name
        for example in family.examples:
            assert match_family(example) is family, (example, match_family(example).name)


def test_every_snapshot_model_has_a_family_and_a_row() -> None:
    covered = {model for _, model in ROWS}
    assert set(schemas.known_models()) == covered
    for family, model in ROWS:
        assert match_family(model).name is family
    assert {family for family, _ in ROWS} == {f.name for f in FAMILIES}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize(("family", "model"), ROWS, ids=[m for _, m in ROWS])
def test_built_input_is_valid_for_the_model(family: Family, model: str, shape: str) -> None:
    request = GenerationRequest(prompt="a lighthouse at dusk", model_id=model, **SHAPES[shape])
    inp = build_input(request)
    assert schemas.validate(model, inp) == []
    # Nothing the model would silently ignore (Replicate drops unknown inputs).
    assert schemas.unknown_fields(model, inp) == []
    assert inp["prompt"] == "a lighthouse at dusk"


@pytest.mark.parametrize(("family", "model"), ROWS, ids=[m for _, m in ROWS])
def test_img2img_reaches_the_model_only_where_supported(family: Family, model: str) -> None:
    inp = build_input(GenerationRequest(prompt="p", model_id=model, source_image=SOURCE,
                                        strength=0.5))
    sent = SOURCE in inp.values() or SOURCE in inp.get("image_input", [])
    assert sent is match_family(model).img2img


@pytest.mark.parametrize(("family", "model"), ROWS, ids=[m for _, m in ROWS])
def test_prediction_target_matches_the_snapshot(family: Family, model: str) -> None:
    snapshot = schemas.load(model)
    version = resolve_version(GenerationRequest.from_payload({"prompt": "p", "model_id": model}))
    if snapshot.official:
        assert version is None
        assert not match_family(model).needs_version
    else:
        assert version == snapshot.version
        assert match_family(model).needs_version
        assert version is not None and schemas.model_for_version(version) == model


def test_the_seed_mapping_would_have_been_rejected() -> None:
    """Guards the corrections: the original's inputs fail the current schemas."""
    seed_schnell = {"prompt": "p", "num_inference_steps": 30, "guidance": 7.5,
                    "aspect_ratio": "1:1", "num_outputs": 1}
    assert any(e["field"] == "input.num_inference_steps"
               for e in schemas.validate("black-forest-labs/flux-schnell", seed_schnell))
    seed_imagen = {"prompt": "p", "aspect_ratio": "21:9", "output_format": "png"}
    assert schemas.validate("google/imagen-4-fast", seed_imagen)
    seed_ideogram = {"prompt": "p", "aspect_ratio": "1:1", "style_type": "auto"}
    assert schemas.validate("ideogram-ai/ideogram-v3-turbo", seed_ideogram)
    seed_seedream4 = {"prompt": "p", "size": "1K", "width": 512, "height": 512}
    assert schemas.validate("bytedance/seedream-4", seed_seedream4)
