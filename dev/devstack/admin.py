"""The stack's own control API, under ``/_stack`` (nothing like it exists on Supabase).

Every endpoint wants the service_role key as ``Authorization: Bearer``; answers are JSON.

    GET    /_stack/settings          the switches (devstack.settings)
    POST   /_stack/settings          {"max_rows": 0, ...}: change some; 400 names a bad one
    GET    /_stack/faults            the fault rules with their counts, and totals per fault
    POST   /_stack/faults            {"rules": [...], "seed": 1}: replace the rules
    DELETE /_stack/faults            remove every rule; answers the final counts
    POST   /_stack/realtime/drop     drop every Realtime socket (``?pause=`` seconds)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.context import StackContext
from devstack.gateway.faults import FaultBook, FaultError
from devstack.keys import InvalidToken
from devstack.settings import SettingsError

Handler = Callable[[Request], Awaitable[Response]]


def service_only(ctx: StackContext, handler: Handler) -> Handler:
    """``handler`` behind a service_role bearer check (401 otherwise)."""

    async def guarded(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            claims = ctx.keys.verify(token.strip()) if scheme.lower() == "bearer" else {}
        except InvalidToken:
            claims = {}
        if claims.get("role") != "service_role":
            return JSONResponse({"message": "service_role bearer token required"},
                                status_code=401)
        return await handler(request)

    return guarded


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise SettingsError("the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise SettingsError("the body must be a JSON object")
    return body


def routes(ctx: StackContext, faults: FaultBook, realtime_drop: Handler) -> list[Route]:
    async def settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                ctx.settings = ctx.settings.changed(await _json_object(request))
            except SettingsError as exc:
                return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse(ctx.settings.as_dict())

    async def fault_rules(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse(faults.reset())
        if request.method == "POST":
            try:
                faults.configure(await _json_object(request))
            except (FaultError, SettingsError) as exc:
                return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse(faults.report())

    return [
        Route("/settings", service_only(ctx, settings), methods=["GET", "POST"]),
        Route("/faults", service_only(ctx, fault_rules), methods=["GET", "POST", "DELETE"]),
        Route("/realtime/drop", service_only(ctx, realtime_drop), methods=["POST"]),
    ]
