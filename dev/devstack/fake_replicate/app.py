"""The fake Replicate HTTP API (``/v1``) plus its output files and a control API.

Replicate endpoints (same paths, headers and JSON as api.replicate.com/v1):

    POST /v1/models/{owner}/{name}/predictions   official models
    POST /v1/predictions                         version: <hex> | owner/name:<hex> | owner/name
    GET  /v1/predictions                         newest first (one page)
    GET  /v1/predictions/{id}
    POST /v1/predictions/{id}/cancel
    GET  /v1/webhooks/default/secret

Output files: ``GET /files/{prediction_id}/out-<n>.<ext>`` (like replicate.delivery).
Control (not Replicate's): ``/v1/_fake/health``, ``/v1/_fake/config`` (GET/POST),
``/v1/_fake/reset`` (POST), ``/v1/_fake/stats``, ``/v1/_fake/predictions`` (every prediction
in memory: its lifecycle timestamps, planned latency and the GETs, cancels and webhooks
made about it). Prompt directives ``[fail] [nsfw] [abort]
[slow:N] [422]`` make outcomes deterministic; see ``config.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.fake_replicate import schemas
from devstack.fake_replicate.config import Directives, FakeConfig
from devstack.fake_replicate.engine import Engine
from devstack.fake_replicate.http import (
    ApiError,
    authenticate,
    check_body,
    inject_faults,
    not_found,
    parse_cancel_after,
    parse_prefer,
    require_credit,
)
from devstack.fake_replicate.images import CONTENT_TYPES
from devstack.fake_replicate.predictions import Prediction

log = logging.getLogger("devstack.fake_replicate")

MAX_BODY_BYTES = 64 * 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]


async def _json_body(request: Request, *, optional: bool = False) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, "Content Too Large", "The request body is too large.")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "Content Too Large", "The request body is too large.")
    if optional and not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Bad request", f"Invalid JSON in request body: {exc}") from exc


class FakeReplicate:
    """Request handlers; the state lives in ``self.engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def counted(self, name: str, fn: Handler, *, count: bool = True) -> Handler:
        """Wrap a handler: ApiError -> problem+json, crash -> JSON 500, stats per status."""

        async def wrapped(request: Request) -> Response:
            try:
                response = await fn(request)
            except ApiError as exc:
                response = exc.response()
            except Exception:
                log.exception("fake replicate: %s failed", name)
                response = ApiError(
                    500, "Internal Server Error", "An unexpected error occurred."
                ).response()
            if count:
                self.engine.stats.request(name, response.status_code)
            return response

        return wrapped

    def replicate_api(self, request: Request) -> str:
        token = authenticate(request, self.engine.config)
        inject_faults(request, self.engine)
        return token

    # -- predictions -------------------------------------------------------------------------
    async def create(self, request: Request, model: str | None) -> Response:
        engine = self.engine
        token = self.replicate_api(request)
        schema = None
        if model is not None:
            schema = schemas.find(model)
            if schema is None or not schema.official:
                raise not_found()
        require_credit(token, engine.config)
        wait = parse_prefer(request.headers.get("prefer"))
        cancel_after = parse_cancel_after(
            request.headers.get("cancel-after"), engine.config.cancel_after_min_seconds
        )
        body = await _json_body(request)
        check_body(body, needs_version=model is None)
        if schema is None:
            schema = _resolve_version(body["version"])
        given = body["input"]
        ignored = self._validate_input(schema, given)
        pred = engine.create(
            schema,
            given,
            webhook=body.get("webhook"),
            events=body.get("webhook_events_filter"),
            cancel_after=cancel_after,
        )
        if wait is not None:
            await engine.wait(pred, wait)
        payload = engine.body(pred)
        done = pred.terminal or pred.output is not None
        status = 201 if wait is None or done else 202
        headers = {"location": payload["urls"]["get"]}
        if ignored:  # not Replicate's: tells a test which inputs the model never reads
            headers["x-fake-ignored-inputs"] = ",".join(ignored)
        return JSONResponse(payload, status, headers=headers)

    def _validate_input(self, schema: schemas.ModelSchema, given: Any) -> list[str]:
        """Raise the 422 Replicate would; return the names of ignored (unknown) inputs."""
        result = schemas.check(schema.model, given)
        errors = list(result.errors)
        if not errors and Directives.parse(given.get("prompt")).reject:
            errors.append(
                {
                    "type": "fake",
                    "field": "input.prompt",
                    "description": "prompt was rejected by the [422] directive",
                }
            )
        if errors:
            raise ApiError(
                422,
                "Input validation failed",
                schemas.problem_detail(errors),
                invalid_fields=errors,
            )
        ignored = schemas.unknown_fields(schema.model, given)
        for name in ignored:
            self.engine.stats.ignored_inputs[f"{schema.model} input.{name}"] += 1
        return ignored

    async def create_official(self, request: Request) -> Response:
        owner = request.path_params["owner"]
        name = request.path_params["name"]
        return await self.create(request, f"{owner}/{name}")

    async def create_versioned(self, request: Request) -> Response:
        return await self.create(request, None)

    def lookup(self, request: Request) -> Prediction:
        self.replicate_api(request)
        pred = self.engine.get(request.path_params["id"])
        if pred is None:
            raise not_found()
        return pred

    async def get_prediction(self, request: Request) -> Response:
        pred = self.lookup(request)
        pred.gets += 1
        return JSONResponse(self.engine.body(pred))

    async def cancel_prediction(self, request: Request) -> Response:
        pred = self.lookup(request)
        pred.cancels += 1
        self.engine.cancel(pred)
        return JSONResponse(self.engine.body(pred))

    async def list_predictions(self, request: Request) -> Response:
        self.replicate_api(request)
        engine = self.engine
        preds = sorted(engine.store.values(), key=lambda p: p.created, reverse=True)[:100]
        for pred in preds:
            engine.get(pred.id)  # applies data removal
        return JSONResponse(
            {"previous": None, "next": None, "results": [engine.body(p) for p in preds]}
        )

    async def webhook_secret(self, request: Request) -> Response:
        self.replicate_api(request)
        return JSONResponse({"key": self.engine.config.webhook_secret})

    async def get_file(self, request: Request) -> Response:
        engine = self.engine
        if engine.config.files_require_auth:
            authenticate(request, engine.config)
        pred = engine.get(request.path_params["id"])
        name = request.path_params["name"]
        if pred is None or not engine.file_available(pred, name):
            raise not_found()
        data = await engine.file_bytes(pred, name)
        ext = name.rsplit(".", 1)[-1]
        return Response(
            data, media_type=CONTENT_TYPES[ext], headers={"cache-control": "public, max-age=3600"}
        )

    # -- control API ---------------------------------------------------------------------------
    async def health(self, _r: Request) -> Response:
        return JSONResponse({"ok": True, "models": len(schemas.known_models())})

    async def fake_config(self, request: Request) -> Response:
        if request.method == "POST":
            patch = await _json_body(request)
            if not isinstance(patch, dict):
                raise ApiError(400, "Bad request", "config patch must be a JSON object")
            try:
                self.engine.update_config(patch)
            except ValidationError as exc:
                errors = json.loads(exc.json(include_url=False, include_input=False))
                return JSONResponse({"detail": "invalid config", "errors": errors}, 400)
        return JSONResponse(self.engine.config.model_dump())

    async def fake_reset(self, request: Request) -> Response:
        body = await _json_body(request, optional=True)
        forget = bool(body.get("predictions")) if isinstance(body, dict) else False
        await self.engine.reset(forget_predictions=forget)
        return JSONResponse({"ok": True, "config": self.engine.config.model_dump()})

    async def fake_stats(self, _r: Request) -> Response:
        engine = self.engine
        engine.sweep()
        stats = engine.stats.as_json()
        stats["predictions_in_memory"] = len(engine.store)
        stats["active"] = sum(1 for p in engine.store.values() if not p.terminal)
        return JSONResponse(stats)

    async def fake_predictions(self, _r: Request) -> Response:
        preds = sorted(self.engine.store.values(), key=lambda p: p.created)
        return JSONResponse({"predictions": [p.record() for p in preds]})

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        self.engine.stats.request("unmatched", status)
        title = "Not found" if status == 404 else "Method not allowed"
        return ApiError(status, title, f"{request.method} {request.url.path}").response()

    def routes(self) -> list[Route]:
        c = self.counted
        return [
            Route(
                "/v1/models/{owner}/{name}/predictions",
                c("POST /v1/models/{owner}/{name}/predictions", self.create_official),
                methods=["POST"],
            ),
            Route(
                "/v1/predictions",
                c("POST /v1/predictions", self.create_versioned),
                methods=["POST"],
            ),
            Route(
                "/v1/predictions", c("GET /v1/predictions", self.list_predictions), methods=["GET"]
            ),
            Route(
                "/v1/predictions/{id}",
                c("GET /v1/predictions/{id}", self.get_prediction),
                methods=["GET"],
            ),
            Route(
                "/v1/predictions/{id}/cancel",
                c("POST /v1/predictions/{id}/cancel", self.cancel_prediction),
                methods=["POST"],
            ),
            Route(
                "/v1/webhooks/default/secret",
                c("GET /v1/webhooks/default/secret", self.webhook_secret),
                methods=["GET"],
            ),
            Route("/files/{id}/{name}", c("GET /files", self.get_file), methods=["GET", "HEAD"]),
            Route("/v1/_fake/health", self.health, methods=["GET"]),
            Route(
                "/v1/_fake/config",
                c("_fake/config", self.fake_config, count=False),
                methods=["GET", "POST"],
            ),
            Route(
                "/v1/_fake/reset", c("_fake/reset", self.fake_reset, count=False), methods=["POST"]
            ),
            Route("/v1/_fake/stats", self.fake_stats, methods=["GET"]),
            Route("/v1/_fake/predictions", self.fake_predictions, methods=["GET"]),
        ]


def _resolve_version(version: str) -> schemas.ModelSchema:
    resolved = schemas.model_for_version(version)
    if resolved is None:
        raise ApiError(
            422,
            "Invalid version or not permitted",
            "The specified version does not exist (or perhaps you don't have "
            "permission to use it?)",
        )
    return schemas.load(resolved)


def create_app(public_url: str, *, config: FakeConfig | None = None) -> Starlette:
    """The fake as an ASGI app; ``public_url`` is where clients reach it (no ``/v1``)."""
    api = FakeReplicate(Engine(public_url, config))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await api.engine.start()
        try:
            yield
        finally:
            await api.engine.stop()

    app = Starlette(
        routes=api.routes(),
        exception_handlers={404: api.on_http_error, 405: api.on_http_error},
        lifespan=lifespan,
    )
    app.state.engine = api.engine
    return app
