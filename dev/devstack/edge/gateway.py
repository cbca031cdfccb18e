"""``/functions/v1/<name>`` for the functions the stack runs under Deno, behind the gateway's
JWT check; every other name goes to the stack's functions_compat mount unchanged.

What hosted Supabase does in front of a function deployed with ``verify_jwt`` (the
default), and so does this gateway:

- ``Authorization: Bearer <jwt>`` must hold a JWT of the project (the anon or service_role
  key, or a user's access token), signed with the project's secret (HS256) or its
  asymmetric key (ES256, from the JWKS), and not expired. Otherwise the function never runs
  and the answer is 401 ``{"code": 401, "message": "Missing authorization header"}`` or
  ``{"code": 401, "message": "Invalid JWT"}``.
- ``OPTIONS`` (the browser's preflight, which carries no token) reaches the function.
- A function that does not start answers 503 ``{"code": "BOOT_ERROR", ...}``; one that
  drops the connection, 502 with Kong's body.

The request and the response stream through unchanged (headers, status, body).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.context import StackContext
from devstack.edge.runtime import EdgeBootError, EdgeRuntime
from devstack.keys import InvalidToken

log = logging.getLogger("devstack.edge")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
SET_BY_THIS_SERVER = frozenset({"date", "server"})
TIMEOUT = httpx.Timeout(150.0, connect=5.0)  # hosted: 150 s request idle timeout


def unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"code": 401, "message": message}, status_code=401)


def check_jwt(request: Request, ctx: StackContext) -> JSONResponse | None:
    """The gateway's verify_jwt: None when the request may reach the function."""
    header = request.headers.get("authorization")
    if header is None or not header.strip():
        return unauthorized("Missing authorization header")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return unauthorized("Invalid JWT")
    try:
        ctx.keys.verify(token.strip())
    except InvalidToken:
        return unauthorized("Invalid JWT")
    return None


class EdgeGateway:
    """ASGI app mounted at /functions/v1: Deno functions here, ``fallback`` for the rest."""

    def __init__(self, ctx: StackContext, fallback: ASGIApp) -> None:
        self.ctx = ctx
        self.fallback = fallback
        self._client: httpx.AsyncClient | None = None

    @property
    def runtime(self) -> EdgeRuntime | None:
        runtime = self.ctx.extras.get("edge")
        return runtime if isinstance(runtime, EdgeRuntime) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        name = _function_name(scope)
        if scope["type"] != "http" or runtime is None or not runtime.serves(name):
            await self.fallback(scope, receive, send)
            return
        request = Request(scope, receive)
        refused = None if request.method == "OPTIONS" else check_jwt(request, self.ctx)
        response = refused or await self._proxy(runtime, name, request)
        await response(scope, receive, send)

    async def _proxy(
        self, runtime: EdgeRuntime, name: str, request: Request
    ) -> JSONResponse | StreamingResponse:
        try:
            base = await runtime.target(name)
        except EdgeBootError as exc:
            log.error("edge function %s did not start: %s", name, exc)
            return JSONResponse(
                {"code": "BOOT_ERROR", "message": "Function failed to start (please check logs)"},
                status_code=503,
            )
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT, trust_env=False)
        suffix = _function_path(request.scope)
        query = request.url.query
        url = f"{base}/{name}{suffix}" + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        has_body = request.method not in ("GET", "HEAD", "OPTIONS") or (
            "content-length" in request.headers or "transfer-encoding" in request.headers
        )
        upstream = self._client.build_request(
            request.method,
            url,
            headers=headers,
            content=_body(request) if has_body else None,
        )
        try:
            answer = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            log.warning("edge function %s: %s", name, type(exc).__name__)
            return JSONResponse(
                {"message": "An invalid response was received from the upstream server"},
                status_code=502,
            )
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers={
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in HOP_BY_HOP | SET_BY_THIS_SERVER
            },
            background=BackgroundTask(answer.aclose),
        )


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _function_name(scope: Scope) -> str:
    return _route_path(scope).lstrip("/").split("/", 1)[0]


def _function_path(scope: Scope) -> str:
    rest = _route_path(scope).lstrip("/").partition("/")
    return "/" + rest[2] if rest[1] else ""
