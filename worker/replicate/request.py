"""The generate-image request, parsed tolerantly from a job payload."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import InvalidInput
from worker.replicate.models import KNOWN_VERSIONS, match_family

MAX_SIDE = 8192
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
DEFAULT_SIDE = 1024


@dataclass(frozen=True)
class GenerationParams:
    """The parameters of one generation as a client gives them (the ``generate-image``
    payload of SPEC section 4; start-generation's body is these plus ``style``). ``None``
    means "not given"."""

    prompt: str
    model_id: str
    model_version: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    source_image_url: str | None = None
    strength: float | None = None


@dataclass(frozen=True)
class GenerationRequest(GenerationParams):
    """What to generate; built from a ``generate-image`` job payload, with the size decided.

    ``source_image`` is the img2img source as a data URI, set by the caller after fetching
    ``source_image_url`` safely. img2img applies only when it is set and ``strength`` is
    not None.
    """

    width: int = DEFAULT_SIDE
    height: int = DEFAULT_SIDE
    source_image: str | None = None

    @property
    def wants_img2img(self) -> bool:
        """The payload asks for image-to-image (a source URL or data and a strength)."""
        return self.strength is not None and bool(self.source_image or self.source_image_url)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> GenerationRequest:
        """Parse a payload whose numbers may arrive as strings, floats or null.

        Raises InvalidInput for values no model could use (an empty prompt, a size of
        zero, a strength outside [0, 1], text where a number belongs). A community
        model without a version gets the catalogue's hash when its id is known.
        """
        prompt = _text(payload, "prompt")
        model_id = _text(payload, "model_id")
        if not prompt:
            raise InvalidInput("prompt is required")
        if not model_id:
            raise InvalidInput("model_id is required")
        version = _text(payload, "model_version") or None
        if version is None and match_family(model_id).needs_version:
            version = KNOWN_VERSIONS.get(model_id.lower())
        strength = _number(payload, "strength", 0.0, 1.0)
        seed = _integer(payload, "seed", None, None)
        return cls(
            prompt=prompt,
            model_id=model_id,
            model_version=version,
            negative_prompt=_text(payload, "negative_prompt") or None,
            width=_integer(payload, "width", 1, MAX_SIDE) or DEFAULT_SIDE,
            height=_integer(payload, "height", 1, MAX_SIDE) or DEFAULT_SIDE,
            num_inference_steps=_integer(payload, "num_inference_steps", 1, MAX_STEPS),
            guidance_scale=_number(payload, "guidance_scale", 0.0, MAX_GUIDANCE),
            seed=seed if seed is not None and seed >= 0 else None,  # negative: random
            source_image=None,
            strength=strength,
            source_image_url=_text(payload, "source_image_url") or None,
        )


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string", details={"field": key})
    return value.strip()


def _raw_number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{key} must be a number", details={"field": key})
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(
            f"{key} must be a number, got {value!r}", details={"field": key}
        ) from None
    if not math.isfinite(number):
        raise InvalidInput(f"{key} must be a finite number", details={"field": key})
    return number


def _check_range(key: str, number: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise InvalidInput(
            f"{key} must be between {lo} and {hi}, got {number:g}", details={"field": key}
        )


def _number(payload: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    number = _raw_number(payload, key)
    if number is not None:
        _check_range(key, number, lo, hi)
    return number


def _integer(payload: Mapping[str, Any], key: str, lo: int | None, hi: int | None) -> int | None:
    value = payload.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | None = value  # exact, even beyond float precision (seeds)
    else:
        raw = _raw_number(payload, key)
        if raw is not None and not raw.is_integer():
            raise InvalidInput(f"{key} must be a whole number, got {raw:g}", details={"field": key})
        number = None if raw is None else int(raw)
    if number is not None:
        _check_range(key, number, lo, hi)
    return number
