"""CORS exactly as the original edge functions: on every response, errors included.

``OPTIONS`` (the browser's preflight) is answered ``200 ok`` before routing or auth, as the
Deno functions did with ``if (req.method === 'OPTIONS') return new Response('ok', ...)``.

The middleware is also the last line of defence: an exception that escapes an endpoint
becomes a JSON 500 (with the CORS headers) instead of Starlette's plain-text page, and
never a stack trace.
"""

from __future__ import annotations

import json
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("functions_compat")

CORS_HEADERS: dict[str, str] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
}


class CorsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await _send(send, 200, b"ok", "text/plain; charset=utf-8")
            return
        started = False

        async def send_with_cors(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in CORS_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_cors)
        except Exception:
            log.exception("unhandled error in %s", scope.get("path"))
            if not started:
                body = json.dumps({"error": "Internal server error"}).encode()
                await _send(send, 500, body, "application/json")


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
