"""The fake Replicate's schema snapshots and validator (devstack.fake_replicate.schemas)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from devstack.fake_replicate import schemas
from devstack.fake_replicate.webhooks import is_loopback_url, sign

LIGHTNING = "6f7a773af6fc3e8de9d5a3c00be77c17308914bf67772726aff83496ba1e3bbe"
SDXL = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"

EXPECTED_MODELS = {
    "black-forest-labs/flux-schnell",
    "black-forest-labs/flux-dev",
    "black-forest-labs/flux-krea-dev",
    "black-forest-labs/flux-1.1-pro",
    "ideogram-ai/ideogram-v3-turbo",
    "google/imagen-4-fast",
    "bytedance/sdxl-lightning-4step",
    "stability-ai/sdxl",
    "bytedance/seedream-4",
    "bytedance/seedream-3",
    "recraft-ai/recraft-v3-svg",
    "recraft-ai/recraft-v3",
    "stability-ai/stable-diffusion-3.5-large",
    "qwen/qwen-image",
}

# A realistic valid input per model (what a correct worker sends).
VALID: dict[str, dict[str, Any]] = {
    "black-forest-labs/flux-schnell": {
        "prompt": "a cat",
        "aspect_ratio": "16:9",
        "num_outputs": 1,
        "num_inference_steps": 4,
        "output_format": "webp",
        "output_quality": 90,
        "seed": 7,
        "go_fast": True,
        "megapixels": "1",
    },
    "black-forest-labs/flux-dev": {
        "prompt": "a cat",
        "aspect_ratio": "1:1",
        "num_inference_steps": 28,
        "guidance": 3.5,
        "image": "data:image/png;base64,iVBORw0KGgo=",
        "prompt_strength": 0.25,
        "output_format": "png",
        "output_quality": 90,
    },
    "black-forest-labs/flux-krea-dev": {"prompt": "a cat", "guidance": 4.5, "num_outputs": 2},
    "black-forest-labs/flux-1.1-pro": {
        "prompt": "a cat",
        "aspect_ratio": "custom",
        "width": 1024,
        "height": 768,
        "safety_tolerance": 2,
        "output_format": "webp",
        "output_quality": 90,
        "seed": 1,
    },
    "ideogram-ai/ideogram-v3-turbo": {
        "prompt": "a cat",
        "aspect_ratio": "16:10",
        "style_type": "Auto",
        "magic_prompt_option": "Off",
        "seed": 2147483647,
    },
    "google/imagen-4-fast": {
        "prompt": "a cat",
        "aspect_ratio": "9:16",
        "output_format": "png",
        "safety_filter_level": "block_only_high",
    },
    "bytedance/sdxl-lightning-4step": {
        "prompt": "a cat",
        "width": 1024,
        "height": 1280,
        "num_inference_steps": 4,
        "guidance_scale": 0,
        "disable_safety_checker": False,
        "seed": 3,
    },
    "stability-ai/sdxl": {
        "prompt": "a cat",
        "width": 1024,
        "height": 1024,
        "num_inference_steps": 30,
        "guidance_scale": 7.5,
        "refine": "expert_ensemble_refiner",
        "high_noise_frac": 0.8,
        "image": "https://example.com/x.png",
        "prompt_strength": 0.6,
    },
    "bytedance/seedream-4": {
        "prompt": "a cat",
        "size": "2K",
        "aspect_ratio": "1:1",
        "max_images": 1,
        "image_input": ["data:image/jpeg;base64,/9j/4AAQ"],
    },
    "bytedance/seedream-3": {
        "prompt": "a cat",
        "aspect_ratio": "custom",
        "width": 1024,
        "height": 1024,
        "guidance_scale": 2.5,
        "seed": 5,
    },
    "recraft-ai/recraft-v3-svg": {
        "prompt": "a cat",
        "size": "1024x1024",
        "style": "vector_illustration",
    },
    "recraft-ai/recraft-v3": {"prompt": "a cat", "size": "1365x1024", "style": "realistic_image"},
    "stability-ai/stable-diffusion-3.5-large": {
        "prompt": "a cat",
        "aspect_ratio": "3:2",
        "cfg": 4.5,
        "steps": 30,
        "output_format": "jpg",
        "output_quality": 90,
        "seed": 9,
    },
    "qwen/qwen-image": {
        "prompt": "a cat",
        "aspect_ratio": "16:9",
        "num_inference_steps": 30,
        "guidance": 3,
        "go_fast": True,
        "image_size": "optimize_for_quality",
        "enhance_prompt": False,
        "output_format": "webp",
        "output_quality": 90,
        "disable_safety_checker": False,
    },
}


def test_known_models_are_the_fourteen_snapshots() -> None:
    assert set(schemas.known_models()) == EXPECTED_MODELS
    assert set(VALID) == EXPECTED_MODELS


def test_snapshot_files_are_well_formed() -> None:
    for path in schemas.SCHEMA_DIR.glob("*.json"):
        raw = json.loads(path.read_text())
        assert raw["input"]["type"] == "object"
        for name, spec in raw["input"]["properties"].items():
            assert spec.get("type") in {"string", "integer", "number", "boolean", "array"}, name
            if "enum" in spec and "default" in spec:
                assert spec["default"] in spec["enum"], (path.name, name)
            if "default" in spec and "minimum" in spec:
                assert spec["minimum"] <= spec["default"] <= spec.get("maximum", 1e18)
        assert raw["output"]["type"] in {"string", "array"}
        assert isinstance(raw["notes"], list)


@pytest.mark.parametrize("model", sorted(EXPECTED_MODELS))
def test_valid_input_passes(model: str) -> None:
    assert schemas.validate(model, VALID[model]) == []
    assert schemas.check(model, VALID[model]).warnings == []


def test_output_shapes_and_official_flags() -> None:
    lists = {
        "black-forest-labs/flux-schnell",
        "black-forest-labs/flux-dev",
        "black-forest-labs/flux-krea-dev",
        "bytedance/sdxl-lightning-4step",
        "stability-ai/sdxl",
        "bytedance/seedream-4",
        "qwen/qwen-image",
        "stability-ai/stable-diffusion-3.5-large",
    }
    for model in EXPECTED_MODELS:
        schema = schemas.load(model)
        assert schema.output_is_list is (model in lists), model
        community = model in {"bytedance/sdxl-lightning-4step", "stability-ai/sdxl"}
        assert schema.official is not community
        assert (schema.version_id == "hidden") is not community
    assert schemas.load("recraft-ai/recraft-v3-svg").native_format == "svg"
    assert schemas.load("stability-ai/sdxl").version == SDXL


def test_model_for_version_forms() -> None:
    assert schemas.model_for_version(LIGHTNING) == "bytedance/sdxl-lightning-4step"
    assert schemas.model_for_version(f"stability-ai/sdxl:{SDXL}") == "stability-ai/sdxl"
    assert schemas.model_for_version("black-forest-labs/flux-schnell") == (
        "black-forest-labs/flux-schnell"
    )
    # community models need their version; a wrong pairing or unknown hash is rejected
    assert schemas.model_for_version("stability-ai/sdxl") is None
    assert schemas.model_for_version(f"stability-ai/sdxl:{LIGHTNING}") is None
    assert schemas.model_for_version("0" * 64) is None
    assert schemas.model_for_version("nobody/nothing") is None


def test_load_unknown_model_raises() -> None:
    with pytest.raises(KeyError):
        schemas.load("nobody/nothing")


def _one(model: str, patch: dict[str, Any], drop: str | None = None) -> dict[str, str]:
    given = {**VALID[model], **patch}
    if drop:
        given.pop(drop)
    errors = schemas.validate(model, given)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("model", "field", "value", "bound"),
    [
        ("black-forest-labs/flux-schnell", "num_inference_steps", 28, "maximum"),
        ("black-forest-labs/flux-schnell", "num_outputs", 0, "minimum"),
        ("black-forest-labs/flux-dev", "guidance", 10.5, "maximum"),
        ("black-forest-labs/flux-1.1-pro", "width", 2048, "maximum"),
        ("black-forest-labs/flux-1.1-pro", "safety_tolerance", 7, "maximum"),
        ("bytedance/sdxl-lightning-4step", "width", 128, "minimum"),
        ("stability-ai/sdxl", "guidance_scale", 0.5, "minimum"),
        ("bytedance/seedream-3", "width", 256, "minimum"),
        ("bytedance/seedream-4", "max_images", 16, "maximum"),
        ("stability-ai/stable-diffusion-3.5-large", "steps", 51, "maximum"),
        ("qwen/qwen-image", "output_quality", 101, "maximum"),
        ("ideogram-ai/ideogram-v3-turbo", "seed", 2147483648, "maximum"),
    ],
)
def test_out_of_range(model: str, field: str, value: Any, bound: str) -> None:
    err = _one(model, {field: value})
    assert err["type"] == bound
    assert err["field"] == f"input.{field}"
    word = "less" if bound == "maximum" else "greater"
    assert err["description"].startswith(f"Must be {word} than or equal to")


def test_schnell_step_message_matches_replicate() -> None:
    err = _one("black-forest-labs/flux-schnell", {"num_inference_steps": 30})
    assert err["description"] == "Must be less than or equal to 4"


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("google/imagen-4-fast", "aspect_ratio", "3:2"),
        ("google/imagen-4-fast", "output_format", "webp"),
        ("black-forest-labs/flux-schnell", "aspect_ratio", "custom"),
        ("ideogram-ai/ideogram-v3-turbo", "style_type", "auto"),
        ("recraft-ai/recraft-v3", "size", "1000x1000"),
        ("bytedance/seedream-4", "size", "3K"),
        ("stability-ai/sdxl", "refine", "yes"),
        ("qwen/qwen-image", "image_size", "big"),
    ],
)
def test_wrong_enum(model: str, field: str, value: Any) -> None:
    err = _one(model, {field: value})
    assert err == {
        "type": "enum",
        "field": f"input.{field}",
        "description": err["description"],
    }
    assert err["description"].startswith(f"{field} must be one of the following: ")


@pytest.mark.parametrize(
    ("model", "field", "value", "expected", "given"),
    [
        ("black-forest-labs/flux-schnell", "num_outputs", "1", "integer", "string"),
        ("black-forest-labs/flux-schnell", "num_inference_steps", 2.5, "integer", "number"),
        ("black-forest-labs/flux-schnell", "megapixels", 1, "string", "integer"),
        ("black-forest-labs/flux-dev", "guidance", "3", "number", "string"),
        ("black-forest-labs/flux-dev", "go_fast", "true", "boolean", "string"),
        ("stability-ai/sdxl", "seed", None, "integer", "null"),
        ("bytedance/seedream-4", "image_input", "data:x", "array", "string"),
        ("google/imagen-4-fast", "prompt", 12, "string", "integer"),
        ("bytedance/sdxl-lightning-4step", "disable_safety_checker", 0, "boolean", "integer"),
    ],
)
def test_wrong_type(model: str, field: str, value: Any, expected: str, given: str) -> None:
    err = _one(model, {field: value})
    assert err["type"] == "type"
    assert err["field"] == f"input.{field}"
    assert err["description"] == f"Invalid type. Expected: {expected}, given: {given}"


def test_integral_float_is_an_integer_like_json_schema() -> None:
    assert schemas.validate("black-forest-labs/flux-schnell", {"prompt": "x", "seed": 4.0}) == []


@pytest.mark.parametrize("model", sorted(m for m in EXPECTED_MODELS if "sdxl" not in m))
def test_missing_prompt(model: str) -> None:
    err = _one(model, {}, drop="prompt")
    assert err == {"type": "required", "field": "input.prompt", "description": "prompt is required"}


def test_sdxl_family_prompt_has_a_default() -> None:
    for model in ("stability-ai/sdxl", "bytedance/sdxl-lightning-4step"):
        assert schemas.validate(model, {}) == []
        assert schemas.load(model).defaults()["prompt"]


def test_unknown_inputs_are_ignored_but_reported() -> None:
    given = {"prompt": "x", "guidance_scale": 3.5, "width": 512}
    result = schemas.check("black-forest-labs/flux-schnell", given)
    assert result.ok
    assert result.warnings == [
        "input.guidance_scale: unknown input ignored by black-forest-labs/flux-schnell",
        "input.width: unknown input ignored by black-forest-labs/flux-schnell",
    ]
    assert schemas.unknown_fields("black-forest-labs/flux-schnell", given) == [
        "guidance_scale",
        "width",
    ]


def test_bad_uri_and_array_items() -> None:
    err = _one("black-forest-labs/flux-dev", {"image": "/etc/passwd"})
    assert err == {
        "type": "format",
        "field": "input.image",
        "description": "Does not match format 'uri'",
    }
    err = _one("bytedance/seedream-4", {"image_input": ["https://a/b.png", 3]})
    assert err["field"] == "input.image_input.1"
    assert err["type"] == "type"
    errs = schemas.validate(
        "bytedance/seedream-4", {"prompt": "x", "image_input": ["https://a/b.png"] * 11}
    )
    assert [e["type"] for e in errs] == ["maxItems"]


def test_non_object_input_and_several_errors() -> None:
    assert schemas.validate("qwen/qwen-image", ["prompt"])[0]["field"] == "input"
    errs = schemas.validate(
        "black-forest-labs/flux-schnell", {"num_outputs": 9, "output_format": "gif"}
    )
    assert {e["field"] for e in errs} == {
        "input.prompt",
        "input.num_outputs",
        "input.output_format",
    }
    detail = schemas.problem_detail(errs)
    assert detail.startswith("- input.prompt: prompt is required\n")


def test_with_defaults_fills_only_known_fields() -> None:
    schema = schemas.load("black-forest-labs/flux-schnell")
    seen = schema.with_defaults({"prompt": "x", "width": 5})
    assert seen["num_inference_steps"] == 4
    assert seen["output_format"] == "webp"
    assert "width" not in seen


# -- webhook helpers (pure functions of the fake's webhook sender) ------------------------------


def test_webhook_targets_are_limited_to_loopback() -> None:
    for url in (
        "http://127.0.0.1:8000/hook",
        "http://localhost/x",
        "http://[::1]:9/x",
        "https://127.8.9.10/x",
        "http://api.localhost/x",
    ):
        assert is_loopback_url(url), url
    for url in (
        "http://10.0.0.1/x",
        "https://example.com/hook",
        "http://192.168.1.2/",
        "not a url",
        "http://[::2]/x",
        "http://localhost.example.com/x",
    ):
        assert not is_loopback_url(url), url


def test_webhook_signature_matches_the_documented_scheme() -> None:
    key = b"0123456789abcdef0123"
    secret = "whsec_" + base64.b64encode(key).decode()
    body = b'{"id":"abc","status":"succeeded"}'
    expected = base64.b64encode(
        hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert sign(secret, "msg_1", 1700000000, body) == f"v1,{expected}"
