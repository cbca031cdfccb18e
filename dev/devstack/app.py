"""The local stack's HTTP server: one port, Supabase's URL layout.

/rest/v1                PostgREST subset            (devstack.rest)
/storage/v1             Storage API                 (devstack.storage)
/auth/v1                GoTrue subset               (devstack.auth)
/realtime/v1/websocket  Phoenix channels            (devstack.realtime)
/functions/v1/<name>    functions_compat, when mounted; chosen names under Deno (devstack.edge)
/_stack                 the stack's control API (devstack.admin): switches, faults

The gateway (devstack.gateway, Kong's part on Supabase) wraps them all.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack import admin, auth, realtime, rest, storage
from devstack.context import StackContext
from devstack.edge import EdgeGateway
from devstack.gateway import FaultBook, Gateway


def create_app(ctx: StackContext) -> ASGIApp:
    hub = realtime.RealtimeHub(ctx)
    ctx.extras["realtime"] = hub
    rest_api = rest.RestApp(ctx)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ctx.api_pool = AsyncConnectionPool(
            ctx.dsn("authenticator"), min_size=2, max_size=40, open=False, timeout=30
        )
        ctx.admin_pool = AsyncConnectionPool(
            ctx.dsn("supabase_admin"), min_size=1, max_size=20, open=False, timeout=30
        )
        await ctx.api_pool.open(wait=True)
        await ctx.admin_pool.open(wait=True)
        await rest_api.start()
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await rest_api.stop()
            await ctx.api_pool.close()
            await ctx.admin_pool.close()

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def functions(scope: Scope, receive: Receive, send: Send) -> None:
        if ctx.functions_app is None:
            response = JSONResponse(
                {"error": "no functions are mounted on this stack"}, status_code=404
            )
            await response(scope, receive, send)
            return
        await ctx.functions_app(scope, receive, send)

    faults = FaultBook()
    services = Starlette(
        routes=[
            Route("/health", health),
            Mount("/rest/v1", app=rest.create_app(rest_api)),
            Mount("/storage/v1", app=storage.create_app(ctx)),
            Mount("/auth/v1", app=auth.create_app(ctx)),
            WebSocketRoute("/realtime/v1/websocket", hub.websocket_endpoint),
            Mount("/functions/v1", app=EdgeGateway(ctx, fallback=functions)),
            Mount("/_stack", routes=admin.ControlApi(ctx, faults, hub.drop_endpoint).routes()),
        ],
        lifespan=lifespan,
    )
    return Gateway(services, ctx, faults)
