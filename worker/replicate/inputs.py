"""Build a model's Replicate input from a generate-image request.

The builders follow SPEC section 6, corrected against the models' current input schemas
(``reference/replicate_supabase.md`` section 2, the fake Replicate's snapshots): only
fields the schema has are sent, and numbers are clamped into the schema's ranges rather
than sent and rejected with a 422. Which builder runs is decided by the family table in
:mod:`worker.replicate.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from worker.errors import InvalidInput
from worker.replicate.models import (
    FAMILIES,
    GENERIC,
    KNOWN_VERSIONS,
    Family,
    ModelFamily,
    OutputRule,
    SizeRule,
    match_family,
)
from worker.replicate.request import GenerationRequest
from worker.replicate.sizing import (
    FLUX_RATIOS,
    IDEOGRAM_RATIOS,
    IMAGEN_RATIOS,
    QWEN_RATIOS,
    RECRAFT_SIZES,
    SEEDREAM4_RATIOS,
    aspect_ratio,
    clamp,
    closest_ratio,
    closest_size,
    fit_box,
    parse_size,
    seedream4_size,
    size_for_ratio,
)

__all__ = [
    "GenerationRequest",
    "ModelFamily",
    "aspect_ratio",
    "build_input",
    "closest_ratio",
    "content_type",
    "family_for",
    "output_format",
    "reported_size",
    "resolve_version",
    "uses_img2img",
]

Input = dict[str, Any]
Builder = Callable[[GenerationRequest], Input]

WEBP_QUALITY = 90
IDEOGRAM_MAX_SEED = 2_147_483_647


def family_for(model_id: str) -> ModelFamily:
    return match_family(model_id)


def uses_img2img(req: GenerationRequest) -> bool:
    """True when the request asks for image-to-image and its model family supports it.

    The caller fetches the source image (safely) only in that case.
    """
    return req.wants_img2img and family_for(req.model_id).img2img


def _img2img(req: GenerationRequest) -> str | None:
    """The source data URI when img2img applies to this request, else None."""
    if req.source_image is not None and req.strength is not None:
        return req.source_image
    return None


def _seed(inp: Input, req: GenerationRequest, *, maximum: int | None = None) -> None:
    if req.seed is not None:
        inp["seed"] = req.seed if maximum is None else req.seed % (maximum + 1)


def _steps(inp: Input, req: GenerationRequest, lo: int, hi: int, key: str) -> None:
    if req.num_inference_steps is not None:
        inp[key] = int(clamp(req.num_inference_steps, lo, hi))


def _guidance(inp: Input, req: GenerationRequest, lo: float, hi: float, key: str) -> None:
    if req.guidance_scale is not None:
        inp[key] = float(clamp(req.guidance_scale, lo, hi))


def _negative(inp: Input, req: GenerationRequest) -> None:
    if req.negative_prompt:
        inp["negative_prompt"] = req.negative_prompt


def _webp(inp: Input) -> None:
    inp["output_format"] = "webp"
    inp["output_quality"] = WEBP_QUALITY


# --- builders, one per family (SPEC 6 order) -------------------------------------------


def _flux_schnell(req: GenerationRequest) -> Input:
    # 1-4 steps, no guidance, no width/height: only the 11 preset ratios.
    inp: Input = {
        "prompt": req.prompt,
        "num_outputs": 1,
        "aspect_ratio": closest_ratio(req.width, req.height, FLUX_RATIOS),
    }
    _steps(inp, req, 1, 4, "num_inference_steps")
    _webp(inp)
    _seed(inp, req)
    return inp


def _flux_dev(req: GenerationRequest) -> Input:
    # flux-dev / flux-krea-dev: `guidance` (0-10), steps 1-50, preset ratios only.
    inp: Input = {
        "prompt": req.prompt,
        "num_outputs": 1,
        "aspect_ratio": closest_ratio(req.width, req.height, FLUX_RATIOS),
    }
    _steps(inp, req, 1, 50, "num_inference_steps")
    _guidance(inp, req, 0.0, 10.0, "guidance")
    _webp(inp)
    _seed(inp, req)
    image = _img2img(req)
    if image is not None and req.strength is not None:
        inp["image"] = image
        # The original's mapping, kept so existing clients see the same behaviour.
        inp["prompt_strength"] = float(clamp(1.0 - req.strength, 0.0, 1.0))
    return inp


def _ideogram(req: GenerationRequest) -> Input:
    # No `model` field in v3's schema; style_type is case-sensitive ("Auto").
    inp: Input = {
        "prompt": req.prompt,
        "aspect_ratio": closest_ratio(req.width, req.height, IDEOGRAM_RATIOS),
        "style_type": "Auto",
    }
    _seed(inp, req, maximum=IDEOGRAM_MAX_SEED)
    return inp


def _imagen(req: GenerationRequest) -> Input:
    # Only 1:1, 9:16, 16:9, 3:4, 4:3; imagen has no seed and no safety_tolerance.
    return {
        "prompt": req.prompt,
        "aspect_ratio": closest_ratio(req.width, req.height, IMAGEN_RATIOS),
        "output_format": "png",
    }


def _sdxl_lightning(req: GenerationRequest) -> Input:
    # A 4-step distilled model: steps 4 and guidance 0 as it was trained; 256-1280 px;
    # no output_format and no image input in its schema.
    width, height = fit_box(req.width, req.height, 256, 1280, multiple=8)
    inp: Input = {
        "prompt": req.prompt,
        "width": width,
        "height": height,
        "num_inference_steps": 4,
        "guidance_scale": 0.0,
        "disable_safety_checker": False,
    }
    _negative(inp, req)
    _seed(inp, req)
    return inp


def _sdxl(req: GenerationRequest) -> Input:
    width, height = fit_box(req.width, req.height, 256, 2048, multiple=8)
    inp: Input = {
        "prompt": req.prompt,
        "width": width,
        "height": height,
        "refine": "expert_ensemble_refiner",
        "high_noise_frac": 0.8,
    }
    _negative(inp, req)
    _steps(inp, req, 1, 500, "num_inference_steps")
    _guidance(inp, req, 1.0, 50.0, "guidance_scale")
    _seed(inp, req)
    image = _img2img(req)
    if image is not None and req.strength is not None:
        inp["image"] = image
        inp["prompt_strength"] = float(clamp(req.strength, 0.0, 1.0))
    return inp


def _seedream_4(req: GenerationRequest) -> Input:
    # width/height only count with size=custom (and must then be >= 1024), so they are
    # not sent; without an input image the default `match_input_image` must be replaced.
    inp: Input = {
        "prompt": req.prompt,
        "size": seedream4_size(req.width, req.height),
        "max_images": 1,
    }
    image = _img2img(req)
    if image is not None:
        inp["image_input"] = [image]
        inp["aspect_ratio"] = "match_input_image"
    else:
        inp["aspect_ratio"] = closest_ratio(req.width, req.height, SEEDREAM4_RATIOS)
    return inp


def _seedream_3(req: GenerationRequest) -> Input:
    # The default ratio is 16:9: width/height count only with aspect_ratio=custom.
    width, height = fit_box(req.width, req.height, 512, 2048, multiple=1)
    inp: Input = {"prompt": req.prompt, "aspect_ratio": "custom", "width": width, "height": height}
    _guidance(inp, req, 1.0, 10.0, "guidance_scale")
    _seed(inp, req)
    return inp


def _flux_pro(req: GenerationRequest) -> Input:
    # width/height (256-1440, multiples of 32) count only with aspect_ratio=custom.
    width, height = fit_box(req.width, req.height, 256, 1440, multiple=32)
    inp: Input = {
        "prompt": req.prompt,
        "aspect_ratio": "custom",
        "width": width,
        "height": height,
        "safety_tolerance": 2,
    }
    _webp(inp)
    _seed(inp, req)
    return inp


def _recraft_svg(req: GenerationRequest) -> Input:
    # `size` is an enum of WxH values; no width/height, seed or output_format fields.
    return {
        "prompt": req.prompt,
        "size": closest_size(req.width, req.height, RECRAFT_SIZES),
        "style": "vector_illustration",
    }


def _recraft(req: GenerationRequest) -> Input:
    return {
        "prompt": req.prompt,
        "size": closest_size(req.width, req.height, RECRAFT_SIZES),
        "style": "realistic_image",
    }


def _sd35(req: GenerationRequest) -> Input:
    inp: Input = {
        "prompt": req.prompt,
        "aspect_ratio": closest_ratio(req.width, req.height, FLUX_RATIOS),
    }
    _guidance(inp, req, 0.0, 20.0, "cfg")
    _steps(inp, req, 1, 50, "steps")
    _webp(inp)
    _seed(inp, req)
    return inp


def _qwen(req: GenerationRequest) -> Input:
    inp: Input = {
        "prompt": req.prompt,
        "aspect_ratio": closest_ratio(req.width, req.height, QWEN_RATIOS),
        "go_fast": True,
        "image_size": "optimize_for_quality",
        "enhance_prompt": False,
        "disable_safety_checker": False,
    }
    _negative(inp, req)
    _steps(inp, req, 1, 50, "num_inference_steps")
    _guidance(inp, req, 0.0, 10.0, "guidance")
    _webp(inp)
    _seed(inp, req)
    return inp


def _generic(req: GenerationRequest) -> Input:
    inp: Input = {"prompt": req.prompt, "width": req.width, "height": req.height}
    if req.num_inference_steps is not None:
        inp["num_inference_steps"] = req.num_inference_steps
    if req.guidance_scale is not None:
        inp["guidance_scale"] = req.guidance_scale
    _seed(inp, req)
    return inp


BUILDERS: Mapping[Family, Builder] = MappingProxyType(
    {
        Family.FLUX_SCHNELL: _flux_schnell,
        Family.FLUX_DEV: _flux_dev,
        Family.IDEOGRAM: _ideogram,
        Family.IMAGEN: _imagen,
        Family.SDXL_LIGHTNING: _sdxl_lightning,
        Family.SDXL: _sdxl,
        Family.SEEDREAM_4: _seedream_4,
        Family.SEEDREAM_3: _seedream_3,
        Family.FLUX_PRO: _flux_pro,
        Family.RECRAFT_SVG: _recraft_svg,
        Family.RECRAFT: _recraft,
        Family.SD35: _sd35,
        Family.QWEN: _qwen,
        Family.GENERIC: _generic,
    }
)

_missing = {f.name for f in (*FAMILIES, GENERIC)} - set(BUILDERS)
if _missing:  # pragma: no cover - a programming error caught at import time
    raise RuntimeError(f"model families without a builder: {sorted(_missing)}")


# --- public API ------------------------------------------------------------------------


def build_input(req: GenerationRequest) -> dict[str, Any]:
    """The ``input`` object for the request's model."""
    return BUILDERS[family_for(req.model_id).name](req)


def resolve_version(req: GenerationRequest) -> str | None:
    """The version to create the prediction with, or None for an official model.

    Community models (sdxl, sdxl-lightning) cannot run without one: the catalogue's hash
    is used for the exact model ids it ships, otherwise the request is refused.
    """
    if req.model_version:
        return req.model_version
    family = family_for(req.model_id)
    if not family.needs_version:
        return None
    known = KNOWN_VERSIONS.get(req.model_id.lower())
    if known is None:
        raise InvalidInput(
            f"{req.model_id} is a community model: it needs a version hash (models.version)",
            details={"model_id": req.model_id},
        )
    return known


_EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        "png": "png",
        "jpg": "jpeg",
        "jpeg": "jpeg",
        "webp": "webp",
        "svg": "svg",
    }
)
_CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "webp": "image/webp",
        "png": "image/png",
        "jpeg": "image/jpeg",
        "jpg": "image/jpeg",
        "svg": "image/svg+xml",
    }
)
_MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "image/webp": "webp",
        "image/png": "png",
        "image/jpeg": "jpeg",
        "image/jpg": "jpeg",
        "image/svg+xml": "svg",
    }
)


def _format_from_url(url: str) -> str | None:
    if url[:5].lower() == "data:":
        media_type = url[5:].split(",", 1)[0].split(";", 1)[0].strip().lower()
        return _MEDIA_TYPES.get(media_type)
    path = unquote(urlsplit(url).path)
    name = path.rsplit("/", 1)[-1]
    if "." not in name:
        return None
    return _EXTENSIONS.get(name.rsplit(".", 1)[-1].lower())


def output_format(model_id: str, output_url: str | None) -> str:
    """``svg`` / ``png`` / ``jpeg`` / ``webp`` for the model's output (SPEC 6)."""
    rule = family_for(model_id).output
    if rule is OutputRule.SVG:
        return "svg"
    if rule is OutputRule.PNG:
        return "png"
    if output_url:
        fmt = _format_from_url(output_url)
        if fmt is not None:
            return fmt
    return "webp"


def content_type(fmt: str) -> str:
    """The Storage content type of an image format (``jpg`` is accepted for ``jpeg``)."""
    try:
        return _CONTENT_TYPES[fmt.lower()]
    except KeyError:
        raise InvalidInput(f"unsupported image format {fmt!r}") from None


def reported_size(req: GenerationRequest) -> tuple[int, int]:
    """The width and height recorded for the generated image."""
    family = family_for(req.model_id)
    if family.size is SizeRule.REQUESTED:
        return req.width, req.height
    inp = build_input(req)
    if family.size is SizeRule.SENT_WIDTH_HEIGHT:
        return int(inp["width"]), int(inp["height"])
    if family.size is SizeRule.SENT_SIZE:
        return parse_size(str(inp["size"]))
    ratio = str(inp.get("aspect_ratio") or aspect_ratio(req.width, req.height))
    return size_for_ratio(ratio, short_side=1024)
