"""The API gateway in front of every service (Kong on Supabase), as the outermost ASGI app.

For each HTTP request, in order:

1. the URL limit: a request line longer than ``settings.url_limit`` bytes (8 KB, nginx's
   large header buffer on hosted) gets Kong's 414 ``{"message": "URI too long"}``;
2. API keys: ``sb_publishable_...`` / ``sb_secret_...`` are resolved to the anon /
   service_role JWT the services verify (``gateway.apikeys``);
3. faults on demand (``gateway.faults``) for ``/rest/v1``, ``/storage/v1``, ``/auth/v1`` and
   ``/functions/v1``: Kong's 429/502/503/504 bodies, slow responses, dropped connections,
   responses lost after the service committed.

Everything else (websockets, ``/_stack``, ``/health``) passes through untouched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devstack.context import StackContext
from devstack.gateway import apikeys, kong
from devstack.gateway.faults import STATUS_FAULTS, FaultBook, FaultRule

log = logging.getLogger("devstack.gateway")

FAULTABLE = ("/rest/v1/", "/storage/v1/", "/auth/v1/", "/functions/v1/")

__all__ = ["FaultBook", "Gateway"]


def request_line_length(scope: Scope) -> int:
    """Bytes of ``METHOD target HTTP/1.1\\r\\n`` as the client sent it."""
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return len(scope["method"]) + 1 + len(target) + (1 + len(query) if query else 0) + 11


class Gateway:
    def __init__(self, app: ASGIApp, ctx: StackContext, faults: FaultBook) -> None:
        self.app = app
        self.ctx = ctx
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.ctx.settings.url_limit
        if limit and request_line_length(scope) > limit:
            await kong.response(414)(scope, receive, send)
            return
        resolved = apikeys.resolve(scope, self.ctx.keyring)
        if isinstance(resolved, Response):
            await resolved(scope, receive, send)
            return
        scope = resolved
        path: str = scope["path"]
        rule = self.faults.pick(scope["method"], path) if path.startswith(FAULTABLE) else None
        if rule is None:
            await self.app(scope, receive, send)
        else:
            await self._inject(rule, scope, receive, send)

    async def _inject(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        if rule.fault == "slow":
            await self.app(scope, receive, _delayed(send, rule.delay))
            return
        if rule.after_upstream:  # the service runs the request and commits; its answer is lost
            await self.app(scope, receive, _discard)
        if rule.fault == "drop":
            await _drop_connection(send)
            return
        assert rule.fault in STATUS_FAULTS
        if rule.delay:
            await asyncio.sleep(rule.delay)
        await kong.response(int(rule.fault))(scope, receive, send)


def _delayed(send: Send, delay: float) -> Send:
    started = False

    async def wrapped(message: Message) -> None:
        nonlocal started
        if not started and message["type"] == "http.response.start":
            started = True
            await asyncio.sleep(delay)
        await send(message)

    return wrapped


async def _discard(_message: Message) -> None:
    return None


async def _drop_connection(send: Send) -> None:
    """Close the client's connection without a response (uvicorn's transport, aborted)."""
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        await asyncio.sleep(0.01)  # let uvicorn see the disconnect: it then sends nothing
        return
    # Another ASGI server: start a response and break it off, the nearest we can get.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ConnectionAbortedError("gateway fault: connection dropped")
