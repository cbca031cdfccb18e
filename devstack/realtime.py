"""Placeholder: replaced by the real implementation."""

from __future__ import annotations

from starlette.websockets import WebSocket

from devstack.context import StackContext


class RealtimeHub:
    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def websocket_endpoint(self, ws: WebSocket) -> None:
        await ws.close()
