"""The stack's own control API, under ``/_stack`` (nothing like it exists on Supabase).

Every endpoint wants the service_role key (legacy JWT or ``sb_secret_``) as
``Authorization: Bearer``; answers are JSON.

    GET    /_stack/settings          the switches (devstack.settings)
    POST   /_stack/settings          {"max_rows": 0, ...}: change some; 400 names a bad one
    GET    /_stack/faults            the fault rules with their counts, and totals per fault
    POST   /_stack/faults            {"rules": [...], "seed": 1}: replace the rules
    DELETE /_stack/faults            remove every rule; answers the final counts
    GET    /_stack/keys              {"current": kid, "kids": [...]}: the published signing keys
    POST   /_stack/keys/rotate       a new current signing key; the old one stays published
    DELETE /_stack/keys/{kid}        unpublish an earlier key (its tokens stop verifying)
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
        token = token.strip() if scheme.lower() == "bearer" else ""
        try:
            role = ctx.keyring.api_key_role(token) or ctx.keyring.verify(token).get("role")
        except InvalidToken:
            role = None
        if role != "service_role":
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


class ControlApi:
    def __init__(self, ctx: StackContext, faults: FaultBook, realtime_drop: Handler) -> None:
        self.ctx = ctx
        self.faults = faults
        self.realtime_drop = realtime_drop

    async def settings(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.ctx.settings = self.ctx.settings.changed(await _json_object(request))
            except SettingsError as exc:
                return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse(self.ctx.settings.as_dict())

    async def fault_rules(self, request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse(self.faults.reset())
        if request.method == "POST":
            try:
                self.faults.configure(await _json_object(request))
            except (FaultError, SettingsError) as exc:
                return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse(self.faults.report())

    def _keys(self) -> Response:
        keys = self.ctx.keyring.keys
        return JSONResponse({"current": keys.kid, "kids": [k for k, _ in keys.signing_keys]})

    async def list_keys(self, _request: Request) -> Response:
        return self._keys()

    async def rotate_keys(self, _request: Request) -> Response:
        self.ctx.keyring.rotate()
        return self._keys()

    async def remove_key(self, request: Request) -> Response:
        kid = request.path_params["kid"]
        try:
            self.ctx.keyring.remove(kid)
        except KeyError:
            return JSONResponse({"message": f"no earlier signing key {kid}"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"message": str(exc)}, status_code=409)
        return self._keys()

    def routes(self) -> list[Route]:
        def guarded(handler: Handler) -> Handler:
            return service_only(self.ctx, handler)

        return [
            Route("/keys", guarded(self.list_keys), methods=["GET"]),
            Route("/keys/rotate", guarded(self.rotate_keys), methods=["POST"]),
            Route("/keys/{kid}", guarded(self.remove_key), methods=["DELETE"]),
            Route("/settings", guarded(self.settings), methods=["GET", "POST"]),
            Route("/faults", guarded(self.fault_rules), methods=["GET", "POST", "DELETE"]),
            Route("/realtime/drop", guarded(self.realtime_drop), methods=["POST"]),
        ]
