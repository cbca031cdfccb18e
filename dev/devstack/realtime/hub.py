"""The Realtime hub: accepts websockets, owns the WAL poller and fans changes out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from devstack.context import StackContext
from devstack.keys import InvalidToken
from devstack.realtime import protocol
from devstack.realtime.bindings import Binding
from devstack.realtime.changes import Change, WalPoller
from devstack.realtime.connection import SEND_QUEUE_SIZE, Channel, Connection
from devstack.realtime.dispatch import dispatch
from devstack.realtime.rows import Identity, RowOracle, TableMissing

log = logging.getLogger("devstack.realtime")

START_TIMEOUT = 10.0  # how long start() waits for the replication slot
STOP_TIMEOUT = 3.0
MAX_PAUSE = 600.0


class RealtimeHub:
    """Supabase Realtime's ``/realtime/v1/websocket``: Phoenix channels + postgres_changes."""

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self.oracle = RowOracle(lambda: ctx.admin, lambda: ctx.api)
        self.poller = WalPoller(ctx.dsn("supabase_admin"), self._on_changes)
        self.connections: set[Connection] = set()
        self.send_queue_size = SEND_QUEUE_SIZE  # frames per socket before it is dropped
        self._poll_task: asyncio.Task[None] | None = None
        self._refuse_until = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._poll_task = asyncio.create_task(self.poller.run(), name="realtime-wal-poller")
        try:
            await asyncio.wait_for(self.poller.ready.wait(), START_TIMEOUT)
        except TimeoutError:
            log.warning("realtime: no replication slot after %.0fs; still trying in the "
                        "background", START_TIMEOUT)

    async def stop(self) -> None:
        connections = list(self.connections)
        for conn in connections:
            conn.abort()
        if connections:
            waiters = [asyncio.create_task(c.finished.wait()) for c in connections]
            _, pending = await asyncio.wait(waiters, timeout=STOP_TIMEOUT)
            for waiter in pending:
                waiter.cancel()
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None

    # -- sockets -----------------------------------------------------------------------
    async def websocket_endpoint(self, ws: WebSocket) -> None:
        params = ws.query_params
        if time.monotonic() < self._refuse_until:
            await _refuse(ws, 503, "Realtime is paused")
            return
        vsn = params.get("vsn") or protocol.V1
        if vsn not in protocol.VERSIONS:
            await _refuse(ws, 400, f"unsupported vsn {vsn}")
            return
        apikey = params.get("apikey") or ws.headers.get("apikey") or ""
        try:
            claims = self.token_claims(apikey)
        except InvalidToken as exc:
            await _refuse(ws, 401, f"Invalid apikey: {exc.message}")
            return
        await ws.accept()
        conn = Connection(self, ws, vsn, Identity.from_claims(claims), self.send_queue_size)
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    def token_claims(self, token: str) -> dict[str, Any]:
        """The claims a token stands for: a verified JWT, or an API key's role (hosted
        Realtime takes sb_publishable_ / sb_secret_ keys as the tenant token too)."""
        if token.startswith("sb_"):
            role = self.ctx.keyring.api_key_role(token)
            if role is None:
                raise InvalidToken("PGRST301", "Invalid API key")
            return {"role": role}
        return self.ctx.keyring.verify(token)

    def subscribers(self) -> list[tuple[Connection, Channel]]:
        return [
            (conn, channel)
            for conn in list(self.connections)
            if not conn.closed
            for channel in list(conn.channels.values())
            if channel.bindings
        ]

    async def validate_filters(self, bindings: Sequence[Binding]) -> None:
        """Reject a join whose filter names a missing column or an impossible value."""
        for b in bindings:
            if b.filter is None or b.table is None or b.schema == "*":
                continue
            try:
                await self.oracle.filter_values(b.schema, b.table, b.filter)
            except TableMissing:
                continue  # it may be created later; checked again on its first change
            except psycopg.Error as exc:
                log.warning("realtime: cannot check filter %s now: %s", b.filter, exc)

    def broadcast(self, sender: Connection, channel: Channel, payload: dict[str, Any]) -> None:
        """Relay a client broadcast to the topic's other members (and back, with self)."""
        if not isinstance(payload.get("event"), str):
            return
        body = json.dumps(payload, separators=(",", ":"))
        for conn in list(self.connections):
            other = conn.channels.get(channel.topic)
            if other is None or (conn is sender and not channel.broadcast_self):
                continue
            conn.push(protocol.encode_raw(conn.vsn, channel.topic, "broadcast", body))

    async def _on_changes(self, changes: Sequence[Change]) -> None:
        subscribers = self.subscribers()
        if subscribers:
            await dispatch(self.oracle, changes, subscribers)

    # -- fault injection ---------------------------------------------------------------
    def drop_all(self, pause: float = 0.0) -> int:
        """Drop every socket without a close frame; refuse new ones for ``pause`` seconds."""
        if pause > 0:
            self._refuse_until = time.monotonic() + pause
        connections = list(self.connections)
        for conn in connections:
            conn.abort()
        log.info("realtime: dropped %d socket(s), refusing new ones for %.1fs",
                 len(connections), pause)
        return len(connections)

    async def drop_endpoint(self, request: Request) -> Response:
        """POST /_stack/realtime/drop[?pause=seconds] (devstack.admin checks the caller)."""
        try:
            pause = float(request.query_params.get("pause", "0"))
        except ValueError:
            pause = -1.0
        if not 0.0 <= pause <= MAX_PAUSE:
            return JSONResponse({"message": f"pause must be 0..{MAX_PAUSE:.0f} seconds"},
                                status_code=400)
        dropped = self.drop_all(pause)
        return JSONResponse({"dropped": dropped, "pause": pause})


async def _refuse(ws: WebSocket, status: int, message: str) -> None:
    """Reject the handshake with an HTTP error (clients count it as a failed connect)."""
    try:
        await ws.send_denial_response(JSONResponse({"message": message}, status_code=status))
    except RuntimeError:  # the server lacks the denial extension: a bare 403
        await ws.close(code=1008, reason=message)

