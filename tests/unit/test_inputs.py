"""Input builders: ratios, sizes, corrections of SPEC 6, img2img, output format, size."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from worker.errors import InvalidInput
from worker.replicate.inputs import (
    GenerationRequest,
    build_input,
    content_type,
    family_for,
    output_format,
    reported_size,
    resolve_version,
    uses_img2img,
)
from worker.replicate.models import KNOWN_VERSIONS, Family
from worker.replicate.sizing import (
    FLUX_RATIOS,
    IMAGEN_RATIOS,
    RECRAFT_SIZES,
    aspect_ratio,
    closest_ratio,
    closest_size,
    fit_box,
    seedream4_size,
    size_for_ratio,
)

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
KREA = "black-forest-labs/flux-krea-dev"
PRO = "black-forest-labs/flux-1.1-pro"
IMAGEN = "google/imagen-4-fast"
SDXL = "stability-ai/sdxl"
LIGHTNING = "bytedance/sdxl-lightning-4step"
SEEDREAM4 = "bytedance/seedream-4"
SEEDREAM3 = "bytedance/seedream-3"
RECRAFT = "recraft-ai/recraft-v3"
RECRAFT_SVG = "recraft-ai/recraft-v3-svg"
SD35 = "stability-ai/stable-diffusion-3.5-large"
QWEN = "qwen/qwen-image"
IDEOGRAM = "ideogram-ai/ideogram-v3-turbo"
SOURCE = "data:image/png;base64,iVBORw0KGgo="


def req(model_id: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", model_id=model_id, **kw)


# --- aspect ratios and sizes ---------------------------------------------------------------


@pytest.mark.parametrize(("w", "h", "ratio"), [
    (1024, 1024, "1:1"), (1920, 1080, "16:9"), (1080, 1920, "9:16"), (1200, 800, "3:2"),
    (1000, 333, "1000:333"), (7, 5, "7:5"), (2560, 1080, "64:27"),
])
def test_aspect_ratio_reduces_by_gcd(w: int, h: int, ratio: str) -> None:
    assert aspect_ratio(w, h) == ratio


def test_aspect_ratio_rejects_zero() -> None:
    with pytest.raises(ValueError):
        aspect_ratio(0, 10)


@pytest.mark.parametrize(("w", "h", "choices", "expected"), [
    (1920, 1080, FLUX_RATIOS, "16:9"),
    (2560, 1080, FLUX_RATIOS, "21:9"),  # 2.37 is nearer 21:9 (2.33) than 16:9 (1.78)
    (1000, 1000, FLUX_RATIOS, "1:1"),
    (800, 1000, FLUX_RATIOS, "4:5"),
    (640, 1536, FLUX_RATIOS, "9:21"),
    (2560, 1080, IMAGEN_RATIOS, "16:9"),  # imagen has no 21:9
    (800, 1200, IMAGEN_RATIOS, "3:4"),  # 2:3 -> 3:4 (log distance .118 < .170 to 9:16)
    (1200, 800, IMAGEN_RATIOS, "4:3"),
    (4000, 100, IMAGEN_RATIOS, "16:9"),
    (100, 4000, IMAGEN_RATIOS, "9:16"),
    (1000, 1000, ("custom", "4:5", "5:4"), "4:5"),  # tie: the first numeric choice wins
])
def test_closest_ratio_by_log_distance(
    w: int, h: int, choices: tuple[str, ...], expected: str
) -> None:
    assert closest_ratio(w, h, choices) == expected


def test_closest_ratio_is_symmetric_in_log_space() -> None:
    # 2:1 sits exactly between 1:1 and 4:1 in log space but not in linear space.
    assert closest_ratio(2000, 1000, ("1:1", "4:1")) == "1:1"
    assert closest_ratio(2100, 1000, ("1:1", "4:1")) == "4:1"


def test_closest_ratio_needs_a_numeric_choice() -> None:
    with pytest.raises(ValueError):
        closest_ratio(10, 10, ("custom",))


@pytest.mark.parametrize(("ratio", "size"), [
    ("1:1", (1024, 1024)), ("16:9", (1820, 1024)), ("9:16", (1024, 1820)),
    ("21:9", (2389, 1024)), ("3:4", (1024, 1365)), ("custom", (1024, 1024)),
])
def test_size_for_ratio_puts_1024_on_the_short_side(ratio: str, size: tuple[int, int]) -> None:
    assert size_for_ratio(ratio) == size


@pytest.mark.parametrize(("w", "h", "lo", "hi", "m", "expected"), [
    (1024, 1024, 256, 1440, 32, (1024, 1024)),
    (1920, 1080, 256, 1440, 32, (1440, 800)),  # scaled down, ratio kept, multiples of 32
    (100, 200, 256, 1440, 32, (256, 512)),  # scaled up
    (4000, 100, 256, 1440, 32, (1440, 256)),  # cannot fit: clamped
    (1000, 1000, 256, 1280, 8, (1000, 1000)),
    (1001, 999, 512, 2048, 1, (1001, 999)),
])
def test_fit_box(w: int, h: int, lo: int, hi: int, m: int, expected: tuple[int, int]) -> None:
    got = fit_box(w, h, lo, hi, multiple=m)
    assert got == expected
    assert all(lo <= side <= hi and side % m == 0 for side in got)


def test_closest_size_prefers_ratio_then_area() -> None:
    assert closest_size(1024, 1024, RECRAFT_SIZES) == "1024x1024"
    assert closest_size(512, 512, RECRAFT_SIZES) == "1024x1024"
    assert closest_size(1920, 1080, RECRAFT_SIZES) == "1820x1024"
    assert closest_size(1024, 2048, RECRAFT_SIZES) == "1024x2048"
    assert closest_size(1200, 900, RECRAFT_SIZES) == "1365x1024"


@pytest.mark.parametrize(("w", "h", "size"), [
    (1024, 1024, "1K"), (512, 768, "1K"), (1025, 1024, "2K"), (2048, 2048, "2K"),
    (4095, 2000, "2K"), (4096, 1024, "4K"), (1024, 5000, "4K"),
])
def test_seedream4_size_rule(w: int, h: int, size: str) -> None:
    assert seedream4_size(w, h) == size
    assert build_input(req(SEEDREAM4, width=w, height=h))["size"] == size


# --- family order ----------------------------------------------------------------------------


def test_flux_11_pro_is_not_caught_by_a_flux_dev_or_schnell_rule() -> None:
    assert family_for(PRO).name is Family.FLUX_PRO
    inp = build_input(req(PRO, num_inference_steps=30, guidance_scale=7.5))
    assert "num_inference_steps" not in inp and "guidance" not in inp
    assert inp["aspect_ratio"] == "custom"
    assert family_for("black-forest-labs/flux-1.1-pro-ultra").name is Family.FLUX_PRO
    assert family_for(KREA).name is Family.FLUX_DEV
    assert family_for("someone/flux-dev-lora").name is Family.FLUX_DEV


@pytest.mark.parametrize(("model_id", "family"), [
    (LIGHTNING, Family.SDXL_LIGHTNING),  # before the generic sdxl row
    (SDXL, Family.SDXL),
    (SEEDREAM4, Family.SEEDREAM_4),  # before seedream (3)
    (SEEDREAM3, Family.SEEDREAM_3),
    (RECRAFT_SVG, Family.RECRAFT_SVG),  # before recraft
    (RECRAFT, Family.RECRAFT),
    ("someone/sd-3-5-medium", Family.SD35),
    ("Black-Forest-Labs/FLUX-Schnell", Family.FLUX_SCHNELL),  # case-insensitive
    ("openai/dall-e-3", Family.GENERIC),
])
def test_family_order(model_id: str, family: Family) -> None:
    assert family_for(model_id).name is family


# --- the SPEC 6 corrections ----------------------------------------------------------------


def test_flux_schnell_clamps_steps_and_sends_no_guidance() -> None:
    inp = build_input(req(SCHNELL, width=1920, height=1080, num_inference_steps=30,
                          guidance_scale=7.5, seed=42))
    assert inp == {"prompt": "a red fox", "num_outputs": 1, "aspect_ratio": "16:9",
                   "num_inference_steps": 4, "output_format": "webp", "output_quality": 90,
                   "seed": 42}
    assert "num_inference_steps" not in build_input(req(SCHNELL))


@pytest.mark.parametrize("model_id", [DEV, KREA, QWEN])
def test_guidance_is_called_guidance(model_id: str) -> None:
    inp = build_input(req(model_id, guidance_scale=3.5, num_inference_steps=28))
    assert inp["guidance"] == 3.5 and "guidance_scale" not in inp


@pytest.mark.parametrize(("model_id", "key", "given", "sent"), [
    (DEV, "guidance", 50.0, 10.0),
    (DEV, "num_inference_steps", 200, 50),
    (SDXL, "guidance_scale", 0.0, 1.0),
    (SD35, "cfg", 30.0, 20.0),
    (SD35, "steps", 80, 50),
    (SEEDREAM3, "guidance_scale", 0.5, 1.0),
])
def test_values_are_clamped_into_the_schema_range(
    model_id: str, key: str, given: float, sent: float
) -> None:
    field = "guidance_scale" if isinstance(given, float) else "num_inference_steps"
    inp = build_input(req(model_id, **{field: given}))
    assert inp[key] == sent


def test_imagen_maps_to_its_five_ratios_and_png() -> None:
    for w, h in [(2560, 1080), (1080, 1350), (1000, 1000), (1536, 640)]:
        inp = build_input(req(IMAGEN, width=w, height=h))
        assert inp["aspect_ratio"] in IMAGEN_RATIOS
        assert inp["output_format"] == "png"
        assert set(inp) == {"prompt", "aspect_ratio", "output_format"}


def test_flux_pro_and_seedream3_use_custom_for_width_height() -> None:
    pro = build_input(req(PRO, width=1920, height=1080))
    assert (pro["aspect_ratio"], pro["width"], pro["height"]) == ("custom", 1440, 800)
    s3 = build_input(req(SEEDREAM3, width=300, height=300))
    assert (s3["aspect_ratio"], s3["width"], s3["height"]) == ("custom", 512, 512)


def test_seedream4_sets_an_explicit_ratio_without_an_image() -> None:
    inp = build_input(req(SEEDREAM4, width=1920, height=1080))
    assert inp["aspect_ratio"] == "16:9" and "image_input" not in inp
    assert "width" not in inp and "height" not in inp  # only read with size=custom


def test_sdxl_lightning_keeps_its_four_steps_and_fits_256_to_1280() -> None:
    inp = build_input(req(LIGHTNING, width=2048, height=1024, num_inference_steps=30,
                          guidance_scale=7.5))
    assert (inp["width"], inp["height"]) == (1280, 640)
    assert inp["num_inference_steps"] == 4 and inp["guidance_scale"] == 0.0


def test_ideogram_seed_stays_in_int32_and_style_is_capitalised() -> None:
    inp = build_input(req(IDEOGRAM, seed=2**31 + 5))
    assert inp["seed"] == 5 and inp["style_type"] == "Auto"


def test_negative_prompt_only_where_the_model_reads_it() -> None:
    for model_id, present in [(SDXL, True), (LIGHTNING, True), (QWEN, True), (SCHNELL, False),
                              (IMAGEN, False)]:
        inp = build_input(req(model_id, negative_prompt="blurry"))
        assert ("negative_prompt" in inp) is present, model_id


def test_generic_sends_only_what_was_given() -> None:
    assert build_input(req("acme/painter", width=640, height=480)) == {
        "prompt": "a red fox", "width": 640, "height": 480}
    full = build_input(req("acme/painter", num_inference_steps=20, guidance_scale=5.0, seed=1))
    assert (full["num_inference_steps"], full["guidance_scale"], full["seed"]) == (20, 5.0, 1)


# --- img2img -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_id", "image_key", "strength_key", "strength_value"), [
    (DEV, "image", "prompt_strength", pytest.approx(0.7)),  # the original's 1 - strength
    (KREA, "image", "prompt_strength", pytest.approx(0.7)),
    (SDXL, "image", "prompt_strength", pytest.approx(0.3)),
    (SEEDREAM4, "image_input", None, None),
])
def test_img2img_needs_a_source_and_a_strength(
    model_id: str, image_key: str, strength_key: str | None, strength_value: Any
) -> None:
    both = build_input(req(model_id, source_image=SOURCE, strength=0.3))
    assert SOURCE in (both[image_key] if image_key == "image_input" else [both[image_key]])
    if strength_key is not None:
        assert both[strength_key] == strength_value
    if model_id == SEEDREAM4:
        assert both["aspect_ratio"] == "match_input_image"
    assert image_key not in build_input(req(model_id, source_image=SOURCE))  # no strength
    assert image_key not in build_input(req(model_id, strength=0.3))  # no source
    assert uses_img2img(req(model_id, source_image_url="https://x.test/a.png", strength=0.3))
    assert not uses_img2img(req(model_id, source_image_url="https://x.test/a.png"))


@pytest.mark.parametrize("model_id", [SCHNELL, PRO, IMAGEN, LIGHTNING, RECRAFT, QWEN, SD35])
def test_families_without_img2img_ignore_the_source(model_id: str) -> None:
    r = req(model_id, source_image=SOURCE, strength=0.5)
    assert SOURCE not in build_input(r).values()
    assert not uses_img2img(r)


# --- output format, content type, reported size ------------------------------------------


@pytest.mark.parametrize(("model_id", "url", "fmt"), [
    (RECRAFT_SVG, "https://replicate.delivery/x/out.webp", "svg"),
    (IMAGEN, "https://replicate.delivery/x/out.jpg", "png"),
    (SCHNELL, "https://replicate.delivery/x/out-0.webp", "webp"),
    (SDXL, "https://replicate.delivery/x/out-0.PNG", "png"),
    (SEEDREAM3, "https://replicate.delivery/x/out.jpg?sig=1", "jpeg"),
    (SEEDREAM4, "https://replicate.delivery/x/out.jpeg", "jpeg"),
    (RECRAFT, "https://replicate.delivery/x/noextension", "webp"),
    (RECRAFT, None, "webp"),
    (QWEN, "data:image/png;base64,iVBORw0KGgo=", "png"),
    (QWEN, "https://replicate.delivery/x.png/out", "webp"),  # a folder named .png
])
def test_output_format(model_id: str, url: str | None, fmt: str) -> None:
    assert output_format(model_id, url) == fmt


@pytest.mark.parametrize(("fmt", "ctype"), [
    ("webp", "image/webp"), ("png", "image/png"), ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"), ("svg", "image/svg+xml"), ("PNG", "image/png"),
])
def test_content_type(fmt: str, ctype: str) -> None:
    assert content_type(fmt) == ctype


def test_content_type_refuses_unknown_formats() -> None:
    with pytest.raises(InvalidInput):
        content_type("bmp")


@pytest.mark.parametrize(("model_id", "w", "h", "size"), [
    (SCHNELL, 1920, 1080, (1820, 1024)),  # SPEC: 1024 on the short side at the ratio
    (SCHNELL, 1080, 1920, (1024, 1820)),
    (SCHNELL, 1024, 1024, (1024, 1024)),
    (DEV, 1200, 800, (1536, 1024)),
    (IMAGEN, 2560, 1080, (1820, 1024)),
    (PRO, 1920, 1080, (1440, 800)),  # what was sent
    (LIGHTNING, 2048, 1024, (1280, 640)),
    (RECRAFT, 1920, 1080, (1820, 1024)),
    (SEEDREAM4, 1920, 1080, (1920, 1080)),
    ("acme/painter", 640, 480, (640, 480)),
])
def test_reported_size(model_id: str, w: int, h: int, size: tuple[int, int]) -> None:
    assert reported_size(req(model_id, width=w, height=h)) == size


# --- from_payload ------------------------------------------------------------------------------


def test_from_payload_is_tolerant_of_strings_and_nulls() -> None:
    r = GenerationRequest.from_payload({
        "generation_id": "g", "user_id": "u", "prompt": "  a fox  ", "model_id": SCHNELL,
        "model_version": "", "negative_prompt": None, "width": "1920", "height": 1080.0,
        "num_inference_steps": "4", "guidance_scale": "7.5", "seed": None,
        "source_image_url": None, "strength": "",
    })
    assert r == GenerationRequest(prompt="a fox", model_id=SCHNELL, width=1920, height=1080,
                                  num_inference_steps=4, guidance_scale=7.5)


def test_from_payload_defaults_and_negative_seed() -> None:
    r = GenerationRequest.from_payload({"prompt": "p", "model_id": DEV, "seed": -1})
    assert (r.width, r.height, r.seed, r.num_inference_steps) == (1024, 1024, None, None)
    big = GenerationRequest.from_payload({"prompt": "p", "model_id": DEV, "seed": 2**40 + 1})
    assert big.seed == 2**40 + 1


def test_from_payload_keeps_the_source_url_but_no_source_bytes() -> None:
    r = GenerationRequest.from_payload({"prompt": "p", "model_id": DEV, "strength": 0.4,
                                        "source_image_url": "https://x.test/a.png"})
    assert r.source_image is None and r.source_image_url == "https://x.test/a.png"
    assert r.wants_img2img and uses_img2img(r)
    with_source = dataclasses.replace(r, source_image=SOURCE)
    assert build_input(with_source)["image"] == SOURCE


@pytest.mark.parametrize("bad", [
    {"prompt": "", "model_id": DEV},
    {"prompt": "   ", "model_id": DEV},
    {"model_id": DEV},
    {"prompt": "p"},
    {"prompt": 5, "model_id": DEV},
    {"prompt": "p", "model_id": DEV, "width": "wide"},
    {"prompt": "p", "model_id": DEV, "width": 0},
    {"prompt": "p", "model_id": DEV, "height": 100_000},
    {"prompt": "p", "model_id": DEV, "width": 1024.5},
    {"prompt": "p", "model_id": DEV, "width": True},
    {"prompt": "p", "model_id": DEV, "num_inference_steps": [4]},
    {"prompt": "p", "model_id": DEV, "guidance_scale": "nan"},
    {"prompt": "p", "model_id": DEV, "guidance_scale": math.inf},
    {"prompt": "p", "model_id": DEV, "strength": 1.5},
    {"prompt": "p", "model_id": DEV, "strength": -0.1},
])
def test_from_payload_refuses_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        GenerationRequest.from_payload(bad)


def test_community_models_get_the_catalogue_version() -> None:
    for model_id in (SDXL, LIGHTNING):
        r = GenerationRequest.from_payload({"prompt": "p", "model_id": model_id})
        assert r.model_version == KNOWN_VERSIONS[model_id]
        assert resolve_version(r) == KNOWN_VERSIONS[model_id]
    given = GenerationRequest.from_payload({"prompt": "p", "model_id": SDXL,
                                            "model_version": "f" * 64})
    assert resolve_version(given) == "f" * 64
    assert resolve_version(req(SCHNELL)) is None
    with pytest.raises(InvalidInput):
        resolve_version(req("someone/sdxl-finetune"))
