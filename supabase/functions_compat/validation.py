"""The start-generation (and legacy generate-image) request body.

Rules (SPEC section 5, and what the original accepted):

- ``prompt`` (required) a non-blank string of at most FUNCTIONS_MAX_PROMPT_CHARS characters;
  ``negative_prompt`` at most as long; ``model_id`` (required) a ``replicate_id`` string;
  ``model_version`` and ``style`` short strings. Strings are trimmed; NUL and other control
  characters (tab, newline and carriage return excepted) and lone UTF-16 surrogates are
  refused, since Postgres cannot store them.
- ``width`` / ``height`` 256..2048 (any whole number, no multiple required),
  ``num_inference_steps`` 1..100, ``guidance_scale`` 0..30, ``seed`` 0..2^31-1,
  ``strength`` 0..1.
- **Numbers given as numeric strings are accepted** (``"1024"``, ``"7.5"``): the original
  passed the body straight to PostgREST, which casts such strings into the integer and
  numeric columns, so clients that send them worked and keep working. Booleans, arrays,
  objects, non-numeric strings, NaN/Infinity and fractions where a whole number belongs are
  400. ``null`` means "not given" (the model's default applies).
- ``source_image_url`` must be https on an allowed host (FUNCTIONS_ALLOWED_SOURCE_HOSTS,
  ``*.`` wildcards), or http on a WORKER_DEV_HTTP_HOSTS ``host:port`` (local stack only).
- Unknown fields are ignored.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import FetchRefused
from worker.net import check_url
from worker.replicate.request import GenerationParams

MIN_SIDE, MAX_SIDE = 256, 2048
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MAX_SEED = 2**31 - 1
MAX_SHORT_TEXT = 200
MAX_URL_CHARS = 2048

_NUMERIC = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InvalidRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int
    allowed_source_hosts: Sequence[str]
    dev_http_hosts: Sequence[str] = ()


@dataclass(frozen=True)
class GenerationBody(GenerationParams):
    """A validated body; ``None`` numbers are "not given" (the model's defaults apply)."""

    style: str | None = None
    generation_id: str | None = None


def parse_generation_body(
    body: Mapping[str, Any], limits: Limits, *, allow_generation_id: bool = False
) -> GenerationBody:
    """Validate a start-generation body; ``InvalidRequest`` names the first bad field."""
    prompt = _text(body, "prompt", limits.max_prompt_chars, multiline=True)
    if not prompt:
        raise InvalidRequest("prompt is required and must be a non-empty string", "prompt")
    model_id = _text(body, "model_id", MAX_SHORT_TEXT)
    if not model_id:
        raise InvalidRequest("model_id is required and must be a non-empty string", "model_id")
    generation_id = None
    if allow_generation_id:
        generation_id = _text(body, "generation_id", 64) or None
        if generation_id is not None and not _is_uuid(generation_id):
            raise InvalidRequest("generation_id must be a uuid", "generation_id")
    return GenerationBody(
        prompt=prompt,
        model_id=model_id,
        model_version=_text(body, "model_version", MAX_SHORT_TEXT) or None,
        negative_prompt=_text(body, "negative_prompt", limits.max_prompt_chars, multiline=True)
        or None,
        style=_text(body, "style", MAX_SHORT_TEXT) or None,
        width=_integer(body, "width", MIN_SIDE, MAX_SIDE),
        height=_integer(body, "height", MIN_SIDE, MAX_SIDE),
        num_inference_steps=_integer(body, "num_inference_steps", MIN_STEPS, MAX_STEPS),
        guidance_scale=_number(body, "guidance_scale", MIN_GUIDANCE, MAX_GUIDANCE),
        seed=_integer(body, "seed", 0, MAX_SEED),
        source_image_url=_source_url(body, limits),
        strength=_number(body, "strength", 0.0, 1.0),
        generation_id=generation_id,
    )


# -- strings ------
def _text(body: Mapping[str, Any], key: str, max_chars: int, *, multiline: bool = False) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string", key)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{key} is not valid Unicode text", key) from None
    text = value.strip()
    bad = _CONTROL.search(text) if multiline else re.search(r"[\x00-\x1f\x7f]", text)
    if bad is not None:
        raise InvalidRequest(f"{key} must not contain control characters", key)
    if len(text) > max_chars:
        raise InvalidRequest(
            f"{key} is too long ({len(text)} characters, at most {max_chars})", key
        )
    return text


# -- numbers ------
def _raw_number(body: Mapping[str, Any], key: str) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"{key} must be a number", key)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if len(text) > 40 or not _NUMERIC.match(text):
            raise InvalidRequest(f"{key} must be a number", key)
        number: float | int = int(text) if text.lstrip("+-").isdigit() else float(text)
    else:
        number = value
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidRequest(f"{key} must be a finite number", key)
    return number


def _out_of_range(key: str, lo: float, hi: float) -> InvalidRequest:
    return InvalidRequest(f"{key} must be between {lo:g} and {hi:g}", key)


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    number = _raw_number(body, key)
    if number is None:
        return None
    if not lo <= number <= hi:
        raise _out_of_range(key, lo, hi)
    return float(number)


def _integer(body: Mapping[str, Any], key: str, lo: int, hi: int) -> int | None:
    number = _raw_number(body, key)
    if number is None:
        return None
    if not lo <= number <= hi:
        raise _out_of_range(key, lo, hi)
    if isinstance(number, float):
        if not number.is_integer():
            raise InvalidRequest(f"{key} must be a whole number", key)
        number = int(number)
    return number


# -- the img2img source ------
def _source_url(body: Mapping[str, Any], limits: Limits) -> str | None:
    """The worker's own URL rules (``worker.net.check_url``), so a source accepted here is
    one the worker's fetcher accepts too."""
    url = _text(body, "source_image_url", MAX_URL_CHARS) or None
    if url is None:
        return None
    try:
        check_url(url, limits.allowed_source_hosts, limits.dev_http_hosts)
    except FetchRefused:
        raise InvalidRequest(
            "source_image_url must be an https URL on an allowed host", "source_image_url"
        ) from None
    return url


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36
