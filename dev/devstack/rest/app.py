"""The ``/rest/v1`` ASGI application: PostgREST 12's request cycle.

    authenticate (JWT) -> parse (query string, Prefer, Accept, body) -> plan (schema cache,
    as last loaded: reloads only on NOTIFY pgrst) -> one transaction on an ``authenticator``
    connection: set_config(role, claims, ...) and the role's own settings (its
    statement_timeout) + the statement -> PostgREST's response or error body.

Reads return at most ``max_rows`` rows (hosted: 1000), like PostgREST's db-max-rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from devstack.context import StackContext
from devstack.rest.errors import ApiError, from_pg, internal_error, invalid_body
from devstack.rest.filter_parse import parse_query
from devstack.rest.operations import (
    Call,
    Outcome,
    Plan,
    plan_insert,
    plan_read,
    plan_rpc,
    plan_update_delete,
    run,
)
from devstack.rest.query_ast import SelectItem, SelectRelation
from devstack.rest.request import (
    SET_CONFIG,
    SET_ROLE_SETTINGS,
    Auth,
    TokenVerifier,
    authenticate,
    check_profile,
    parse_accept,
    parse_prefer,
)
from devstack.rest.schema_cache import SCHEMA, PgType, SchemaCache, SchemaStore
from devstack.rest.schema_listener import SchemaListener

log = logging.getLogger("devstack.rest")

SERVER_VERSION = "12.2.3"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": (
        "Content-Encoding, Content-Location, Content-Range, Content-Type, Date, Location, "
        "Server, Transfer-Encoding, Range-Unit"
    ),
}
_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE")


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def _casts(items: list[SelectItem]) -> set[str]:
    names: set[str] = set()
    for item in items:
        if isinstance(item, SelectRelation):
            names |= _casts(item.children)
        elif item.cast:
            names.add(item.cast)
    return names


def _range_header(request: Request) -> tuple[int | None, int | None]:
    value = request.headers.get("range", "").strip()
    lower, sep, upper = value.partition("-")
    if request.method != "GET" or not sep or not lower.isdigit():
        return None, None
    if upper.isdigit():
        return int(lower), max(int(upper) - int(lower) + 1, 0)
    return int(lower), None


class RestApp:
    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self.store = SchemaStore(lambda: ctx.api)
        self.listener = SchemaListener(
            ctx.dsn("authenticator"), self.store, lambda: ctx.settings.schema_reload_delay
        )
        self.tokens = TokenVerifier(ctx.keyring)

    async def start(self) -> None:
        """Load the schema cache and listen for reloads (the app's lifespan calls this)."""
        await self.store.get()
        self.listener.start()
        await asyncio.wait_for(self.listener.listening.wait(), timeout=10)

    async def stop(self) -> None:
        await self.listener.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        try:
            response = await self.handle(request)
        except ApiError as err:
            response = err.response()
        except PoolTimeout:
            response = ApiError(
                504, "PGRST003", "Timed out acquiring connection from connection pool."
            ).response()
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            response = internal_error().response()
        response.headers.update(CORS)
        return response

    async def handle(self, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            return Response(status_code=200, headers={
                "Access-Control-Allow-Methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "access-control-request-headers", "*"
                ),
                "Access-Control-Max-Age": "86400",
            })
        auth = authenticate(request.headers, self.tokens)
        if method not in _METHODS:
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")
        check_profile(method, request.headers)
        path = _route_path(request.scope)
        segments = [s for s in path.split("/") if s]
        if not segments:
            return await self.root(method)
        if len(segments) == 2 and segments[0] == "rpc":
            is_rpc, target = True, segments[1]
        elif len(segments) == 1:
            is_rpc, target = False, segments[0]
        else:
            raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
        query_string = request.scope.get("query_string", b"").decode("utf-8", "replace")
        q = parse_query(parse_qsl(query_string, keep_blank_values=True))
        accept = parse_accept(request.headers.get("accept"))
        prefer = parse_prefer(request.headers)
        body: Any = None
        if method in ("POST", "PATCH"):
            raw = await request.body()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise invalid_body() from exc
        offset, limit = _range_header(request)
        call = Call(method, target, is_rpc, q, prefer, accept, body, offset, limit,
                    max_rows=self.ctx.settings.max_rows)
        plan, cache = await self.plan(call)
        role_settings = cache.role_settings.get(auth.role, {})
        outcome = await self.execute(
            auth, request, path, plan, role_settings, read_only=method in ("GET", "HEAD")
        )
        return self.render(outcome, call)

    async def plan(self, call: Call) -> tuple[Plan, SchemaCache]:
        cache = await self.store.get()
        casts: dict[str, PgType | None] = {
            name: await self.store.cast_type(name) for name in _casts(call.q.select)
        }
        return self._plan(call, cache, casts), cache

    @staticmethod
    def _plan(call: Call, cache: SchemaCache, casts: dict[str, PgType | None]) -> Plan:
        if call.is_rpc:
            return plan_rpc(call, cache, casts)
        if call.method in ("GET", "HEAD"):
            return plan_read(call, cache, casts)
        if call.method == "POST":
            return plan_insert(call, cache, casts)
        return plan_update_delete(call, cache, casts)

    async def execute(
        self,
        auth: Auth,
        request: Request,
        path: str,
        plan: Plan,
        role_settings: dict[str, str],
        *,
        read_only: bool,
    ) -> Outcome:
        settings = auth.settings(request.method, path, request.headers, read_only)
        async with self.ctx.api.connection() as conn:
            try:
                # Pipeline mode: BEGIN, the settings and the statement leave in one round trip,
                # COMMIT and the sync in a second one.
                async with conn.pipeline() as pipeline, conn.transaction():
                    await conn.execute(SET_CONFIG, settings)
                    if role_settings:  # e.g. anon's statement_timeout = 3s
                        await conn.execute(
                            SET_ROLE_SETTINGS, (list(role_settings), list(role_settings.values()))
                        )
                    return await run(conn, pipeline, plan)
            except psycopg.Error as exc:
                raise from_pg(exc, auth.authed) from exc

    @staticmethod
    def render(outcome: Outcome, call: Call) -> Response:
        headers = dict(outcome.headers)
        if call.method not in ("GET", "HEAD") and call.prefer.applied:
            headers["Preference-Applied"] = ", ".join(call.prefer.applied)
        headers["Content-Profile"] = SCHEMA
        if outcome.body is None:
            return Response(status_code=outcome.status, headers=headers)
        return Response(outcome.body, outcome.status, headers, media_type=outcome.media_type)

    async def root(self, method: str) -> Response:
        """A small OpenAPI description (PostgREST serves one at the root)."""
        if method not in ("GET", "HEAD"):
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")
        cache = await self.store.get()
        paths: dict[str, Any] = {"/": {}}
        definitions: dict[str, Any] = {}
        for name, table in sorted(cache.tables.items()):
            paths[f"/{name}"] = {}
            definitions[name] = {
                "type": "object",
                "required": [c.name for c in table.columns.values() if not c.nullable],
                "properties": {c.name: {"format": c.display} for c in table.columns.values()},
            }
        for name in sorted(cache.functions):
            paths[f"/rpc/{name}"] = {}
        return JSONResponse({
            "swagger": "2.0",
            "info": {"title": "PostgREST API (picture-worker local stack)",
                     "version": SERVER_VERSION},
            "basePath": "/",
            "schemes": ["http"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "paths": paths,
            "definitions": definitions,
        })
