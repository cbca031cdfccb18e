"""POST /start-generation (user JWT): create the generation and its job, answer at once.

    200 {"success": true, "generation_id", "job_id", "status": "queued", "message": ...}
    400 bad body / unknown or inactive model / a model_version not the catalogue's,
    401 token, 429 too many in flight, 405 not POST, 413 body over 256 KiB, 500 internal

The body is checked here first (types, ranges, source-image hosts: the clear 400s and what
the database cannot know), then ``public.request_generation`` runs with the caller's own
JWT: the database decides the user from the token, applies the catalogue, the bounds and
the in-flight limit, and creates the row and its job in one transaction, so a rejected
request leaves nothing behind. The hosted Deno function calls the same RPC.

The legacy generate-image starts a row its client created (``generation_id``) through
``public.create_generation`` (service role), which meets the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions_compat.auth import Caller, TokenVerifier
from functions_compat.config import FunctionsConfig
from functions_compat.db import ServiceDb, UserDb
from functions_compat.http import HttpError, json_response, read_json_object
from functions_compat.validation import (
    GenerationBody,
    InvalidRequest,
    Limits,
    parse_generation_body,
)
from worker.statuses import GenerationStatus

DEFAULT_SIDE = 1024
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
STARTED_MESSAGE = "Image generation started. You will be notified when complete."


@dataclass(frozen=True)
class Started:
    generation_id: str
    job_id: str


def _pick(given: Any, default: Any, fallback: Any) -> Any:
    if given is not None:
        return given
    return default if default is not None else fallback


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _as_int(value: Any) -> int | None:
    return None if value is None else int(value)


def model_label(model: Mapping[str, Any], model_id: str) -> str:
    """The ``model`` column: the catalogue name, else its replicate_id (the database accepts
    a generation only when ``model`` names one active catalogue row)."""
    name = model.get("name")
    if isinstance(name, str) and name.strip():
        return name
    return model_id


def request_body(body: GenerationBody) -> dict[str, Any]:
    """The validated body as ``public.request_generation`` takes it."""
    return {
        "prompt": body.prompt,
        "model_id": body.model_id,
        "model_version": body.model_version,
        "negative_prompt": body.negative_prompt,
        "style": body.style,
        "width": body.width,
        "height": body.height,
        "num_inference_steps": body.num_inference_steps,
        "guidance_scale": body.guidance_scale,
        "seed": body.seed,
        "source_image_url": body.source_image_url,
        "strength": body.strength,
    }


def build_rows(
    body: GenerationBody, model: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(image_generations fields, generate-image payload) with the model's defaults applied."""
    width = _pick(body.width, _as_int(model.get("default_width")), DEFAULT_SIDE)
    height = _pick(body.height, _as_int(model.get("default_height")), DEFAULT_SIDE)
    steps = _pick(body.num_inference_steps, _as_int(model.get("default_steps")), DEFAULT_STEPS)
    guidance = _pick(
        body.guidance_scale, _as_float(model.get("default_guidance_scale")), DEFAULT_GUIDANCE
    )
    version = body.model_version or model.get("version") or None
    generation: dict[str, Any] = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "model": model_label(model, body.model_id),
        "style": body.style,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance,
    }
    if body.generation_id is not None:
        generation["id"] = body.generation_id
    payload: dict[str, Any] = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "model_id": body.model_id,
        "model_version": version,
        "width": width,
        "height": height,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "seed": body.seed,
        "source_image_url": body.source_image_url,
        "strength": body.strength,
    }
    return generation, payload


class GenerationStarter:
    """Validate a body and create (or, legacy, start) a generation with its job."""

    def __init__(self, config: FunctionsConfig, db: ServiceDb, user_db: UserDb) -> None:
        self.config = config
        self.db = db
        self.user_db = user_db
        self.limits = Limits(
            max_prompt_chars=config.max_prompt_chars,
            allowed_source_hosts=config.allowed_source_hosts,
            dev_http_hosts=config.dev_http_hosts,
        )

    def parse(
        self, body: Mapping[str, Any], *, allow_generation_id: bool = False
    ) -> GenerationBody:
        try:
            return parse_generation_body(body, self.limits, allow_generation_id=allow_generation_id)
        except InvalidRequest as exc:
            raise HttpError(400, exc.message) from None

    async def start(self, caller: Caller, body: GenerationBody) -> Started:
        assert caller.user_id is not None
        if body.generation_id is None:
            row = await self.user_db.request_generation(caller.token, request_body(body))
            return Started(str(row["generation_id"]), str(row["job_id"]))
        model = await self.db.active_model(body.model_id)
        if model is None:
            raise HttpError(400, f"Unknown model: {body.model_id}")
        generation, payload = build_rows(body, model)
        row = await self.db.create_generation(caller.user_id, generation, payload)
        return Started(str(row["generation_id"]), str(row["job_id"]))


class StartGeneration:
    def __init__(self, verifier: TokenVerifier, starter: GenerationStarter) -> None:
        self.verifier = verifier
        self.starter = starter

    async def __call__(self, request: Request) -> Response:
        caller = await self.verifier.user(request)
        body = self.starter.parse(await read_json_object(request))
        started = await self.starter.start(caller, body)
        return json_response(
            {
                "success": True,
                "generation_id": started.generation_id,
                "job_id": started.job_id,
                "status": GenerationStatus.QUEUED,
                "message": STARTED_MESSAGE,
            }
        )
