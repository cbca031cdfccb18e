"""A recording reverse proxy in front of the local stack, to count the calls workers make.

Workers get the proxy's URL as SUPABASE_URL; every HTTP request is forwarded unchanged to
the stack and recorded as one ``Call`` (when it arrived, its kind, the status). Realtime's
WebSocket is passed through both ways and not counted (its connections are). Kinds:

    rpc <name>                 POST /rest/v1/rpc/<name>
    rpc <claim...> (empty)     a claim RPC that answered [] (no job)
    rpc <claim...> (jobs)      a claim RPC that answered jobs
    <table> read|insert|upsert|update|delete     /rest/v1/<table>
    storage <method> <area>    /storage/v1/<area>/...
    auth|functions <method>    anything else, by service

It is an ASGI app served by uvicorn on a thread of its own (``start()`` / ``stop()``), so it
runs beside the benchmark's own code in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from devstack.pg import free_port

HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "upgrade",
              "content-length", "content-encoding", "proxy-connection", "te", "trailer"}
WRITE_VERBS = {"POST": "insert", "PATCH": "update", "DELETE": "delete", "PUT": "upsert"}

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when the request arrived
    kind: str
    status: int
    jobs: int = 0  # claim RPCs: how many jobs came back


def classify(method: str, path: str, headers: dict[str, str], status: int,
             body: bytes) -> tuple[str, int]:
    """(kind, jobs claimed) of one HTTP exchange."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["rest", "v1"] and len(parts) >= 3:
        if parts[2] == "rpc" and len(parts) >= 4:
            name = parts[3]
            if "claim" in name and status < 300:
                try:
                    data = json.loads(body or b"null")
                except ValueError:
                    data = None
                jobs = len(data) if isinstance(data, list) else 0
                return f"rpc {name} ({'jobs' if jobs else 'empty'})", jobs
            return f"rpc {name}", 0
        verb = "read" if method in ("GET", "HEAD") else WRITE_VERBS.get(method, method.lower())
        if method == "POST" and "merge-duplicates" in headers.get("prefer", ""):
            verb = "upsert"
        return f"{parts[2]} {verb}", 0
    if parts[:2] == ["storage", "v1"]:
        area = parts[2] if len(parts) > 2 else ""
        return f"storage {method} {area}".rstrip(), 0
    service = parts[0] if parts else "/"
    return f"{service} {method}", 0


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:<port>
        self.port = free_port()
        self.calls: list[Call] = []
        self.websockets = 0
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        self._server = uvicorn.Server(uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            ws="websockets-sansio", access_log=False))
        self._thread = threading.Thread(target=self._server.run, name="supaproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> RecordingProxy:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the recording proxy did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    # -- ASGI ------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(300.0, connect=5.0),
                    limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        at = time.monotonic()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.upstream + scope["raw_path"].decode("latin-1").split("?", 1)[0]
        url += f"?{query}" if query else ""
        assert self._client is not None
        try:
            response = await self._client.request(
                scope["method"], url, content=body,
                headers={k: v for k, v in headers.items() if k not in HOP_BY_HOP})
        except httpx.HTTPError:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"bad gateway"})
            return
        content = response.content
        kind, jobs = classify(scope["method"], scope["path"], headers, response.status_code,
                              content)
        with self._lock:
            self.calls.append(Call(at, kind, response.status_code, jobs))
        out = [(k.encode("latin-1"), v.encode("latin-1"))
               for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": out})
        await send({"type": "http.response.body", "body": content})

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = "ws" + self.upstream[len("http"):] + scope["path"] + (f"?{query}" if query else "")
        try:
            upstream = await connect(url, max_size=None, open_timeout=10)
        except (OSError, TimeoutError, ConnectionClosed):
            await send({"type": "websocket.close", "code": 1011})
            return
        with self._lock:
            self.websockets += 1
        await send({"type": "websocket.accept"})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text")
                await upstream.send(data if data is not None else message.get("bytes") or b"")

        async def upstream_to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})

        tasks = [asyncio.create_task(client_to_upstream()),
                 asyncio.create_task(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1000})
