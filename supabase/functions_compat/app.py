"""The edge-function HTTP contracts of the Picture app as one ASGI app (SPEC section 5).

    POST /start-generation     user JWT      queue a generation, answer at once
    POST /process-jobs         project JWT   claim and run up to 3 jobs in the request
    POST /process-generation   service key   one synchronous Replicate generation
    POST /generate-image       user JWT      legacy synchronous API (through the queue)
    POST /replicate-webhook    signature     Replicate's prediction-finished deliveries
    OPTIONS *                  CORS preflight, answered ``ok``

The local stack mounts the app at ``/functions/v1`` (routes are then ``/<name>``); served on
its own (``picture-worker functions``) it answers both ``/<name>`` and
``/functions/v1/<name>``, so clients keep their URLs. Every response carries the original's
CORS headers; every error is a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions_compat.auth import TokenVerifier
from functions_compat.config import FunctionsConfig
from functions_compat.cors import CorsMiddleware
from functions_compat.db import ServiceDb, UserDb
from functions_compat.generate_image import GenerateImage
from functions_compat.http import Endpoint, error_response, guarded
from functions_compat.process_generation import ProcessGeneration
from functions_compat.process_jobs import ProcessJobs
from functions_compat.replicate_webhook import ReplicateWebhook, WebhookStore
from functions_compat.runtime import WorkerRuntimes
from functions_compat.start_generation import GenerationStarter, StartGeneration
from worker import wiring

log = logging.getLogger("functions_compat")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
WEBHOOK_DB_TIMEOUT = 10.0  # Replicate waits for the answer; it retries failed deliveries


def build_endpoints(config: FunctionsConfig, runtimes: WorkerRuntimes) -> dict[str, Endpoint]:
    """Function name -> endpoint."""
    verifier = TokenVerifier(config)
    client = wiring.supabase_client(config.supabase_url, config.service_key)
    db = ServiceDb(client, wiring.generations(client))
    user_db = UserDb(config.supabase_url, config.anon_key or config.service_key)
    webhook_store = WebhookStore(
        wiring.supabase_client(config.supabase_url, config.service_key, timeout=WEBHOOK_DB_TIMEOUT)
    )
    starter = GenerationStarter(config, db, user_db)
    return {
        "start-generation": guarded(StartGeneration(verifier, starter)),
        "process-jobs": guarded(ProcessJobs(verifier, runtimes)),
        "process-generation": guarded(
            ProcessGeneration(verifier, runtimes, config.generate_timeout),
            failure_fields={"success": False},
        ),
        "generate-image": guarded(GenerateImage(verifier, starter, db, config.generate_timeout)),
        "replicate-webhook": guarded(ReplicateWebhook(config, webhook_store)),
    }


def create_app(env: Mapping[str, str] | None = None) -> Starlette:
    """The functions app; ``env`` defaults to os.environ. Raises ConfigError naming a bad
    variable."""
    config = FunctionsConfig.from_env(os.environ if env is None else env)
    runtimes = WorkerRuntimes(config)
    endpoints = build_endpoints(config, runtimes)

    async def dispatch(request: Request) -> Response:
        endpoint = endpoints.get(request.path_params["name"])
        if endpoint is None:
            return error_response(404, "Requested function was not found")
        return await endpoint(request)

    async def healthz(_request: Request) -> Response:
        # The image's HEALTHCHECK probes /healthz for `run` and `functions` alike.
        return JSONResponse({"status": "ok"})

    async def not_found(_request: Request) -> Response:
        return error_response(404, "Requested function was not found")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runtimes.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/functions/v1/{name}", dispatch, methods=METHODS),
            Route("/{name}", dispatch, methods=METHODS),
            Route("/{path:path}", not_found, methods=METHODS),
        ],
        middleware=[Middleware(CorsMiddleware)],
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.endpoints = endpoints
    return app
