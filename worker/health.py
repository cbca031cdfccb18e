"""/healthz, /readyz and /metrics on a tiny asyncio HTTP server (no framework needed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from worker.metrics import Metrics

log = logging.getLogger("worker.health")

ReadyCheck = Callable[[], Awaitable[tuple[bool, dict[str, object]]]]


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: ReadyCheck,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.ready = ready
        self.alive = alive
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("health server on %s:%d", self.host, self.port, extra={"action": "health.started"})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            status, ctype, body = await self._route(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            ok = self.alive()
            return (
                "200 OK" if ok else "503 Service Unavailable",
                "application/json",
                json.dumps({"status": "ok" if ok else "unhealthy"}).encode(),
            )
        if path == "/readyz":
            try:
                ok, info = await asyncio.wait_for(self.ready(), timeout=5)
            except Exception as exc:
                ok, info = False, {"error": type(exc).__name__}
            body = json.dumps({"status": "ready" if ok else "not ready", **info}).encode()
            return ("200 OK" if ok else "503 Service Unavailable", "application/json", body)
        if path == "/metrics":
            return (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render().encode(),
            )
        return ("404 Not Found", "application/json", b'{"error":"not found"}')
