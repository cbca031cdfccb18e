"""One Realtime websocket: its channels, its bounded send queue and the client's frames.

Frames from the client are handled one at a time, in order; a bad frame is logged and
skipped. A join is answered at once; its postgres_changes subscription is made a moment
later, in a task of its own (devstack.realtime.subscription). Everything the server sends
goes through a bounded queue drained by one writer task, so a slow client never blocks the
hub: when its queue overflows the socket is dropped (closed without a close frame, the
client sees 1006 and reconnects).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from devstack.keys import InvalidToken
from devstack.realtime import protocol
from devstack.realtime.bindings import Binding, BindingError, echo, parse_bindings
from devstack.realtime.protocol import Message
from devstack.realtime.rows import Identity
from devstack.realtime.subscription import (
    SUBSCRIBED,
    first_unpublished,
    published_tables,
    unpublished_error,
)

if TYPE_CHECKING:
    from devstack.realtime.hub import RealtimeHub

log = logging.getLogger("devstack.realtime")

SEND_QUEUE_SIZE = 2000
MAX_CHANNELS = 100  # per socket, as on every Supabase plan


@dataclass
class Channel:
    topic: str
    join_ref: str | None
    bindings: list[Binding]  # the live subscription: empty until it exists
    identity: Identity
    broadcast_self: bool = False

    @property
    def name(self) -> str:
        return self.topic.removeprefix("realtime:")


class Connection:
    def __init__(
        self,
        hub: RealtimeHub,
        ws: WebSocket,
        vsn: str,
        apikey: Identity,
        queue_size: int = SEND_QUEUE_SIZE,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.vsn = vsn
        self.apikey = apikey
        self.channels: dict[str, Channel] = {}
        self.closed = False
        self.finished = asyncio.Event()
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._abort = asyncio.Event()
        self._subscribing: set[asyncio.Task[None]] = set()

    # -- sending -----------------------------------------------------------------------
    def push(self, frame: str) -> bool:
        """Queue a frame; False if the socket is gone or just got dropped for overflowing."""
        if self.closed:
            return False
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("realtime: dropping a client that stopped reading (%d frames queued)",
                        self._queue.qsize())
            self.abort()
            return False
        return True

    def abort(self) -> None:
        """Drop the socket now, without a close frame."""
        self.closed = True
        self._abort.set()

    def current(self, channel: Channel) -> bool:
        return not self.closed and self.channels.get(channel.topic) is channel

    # -- lifecycle ---------------------------------------------------------------------
    async def serve(self) -> None:
        tasks = {
            asyncio.create_task(self._write_loop(), name="realtime-writer"),
            asyncio.create_task(self._read_loop(), name="realtime-reader"),
            asyncio.create_task(self._abort.wait(), name="realtime-abort"),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.closed = True
            self.channels.clear()
            for task in (*tasks, *self._subscribing):
                task.cancel()
            await asyncio.gather(*tasks, *self._subscribing, return_exceptions=True)
            self.finished.set()
        # Returning without websocket.close: the server closes the TCP connection.

    async def _write_loop(self) -> None:
        while True:
            frame = await self._queue.get()
            try:
                await self.ws.send_text(frame)
            except Exception as exc:  # the client is gone, whatever the ASGI server raises
                log.debug("realtime: send failed: %s", exc)
                return

    async def _read_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                text, data = message.get("text"), message.get("bytes")
                if text is not None:
                    msg = protocol.decode_text(text, self.vsn)
                elif data is not None:
                    msg = protocol.decode_binary(data)
                else:
                    continue
            except protocol.ProtocolError as exc:
                log.info("realtime: ignoring a bad frame: %s", exc)
                continue
            try:
                await self._handle(msg)
            except Exception:
                log.exception("realtime: handling %s on %s failed", msg.event, msg.topic)

    # -- frames ------------------------------------------------------------------------
    def _reply(self, msg: Message, status: str = "ok", response: dict[str, Any] | None = None,
               ) -> None:
        self.push(protocol.reply(self.vsn, msg, status, response or {}))

    def _send(self, msg: Message) -> None:
        self.push(protocol.encode(self.vsn, msg))

    async def _handle(self, msg: Message) -> None:
        if msg.topic == "phoenix":
            self._reply(msg)  # heartbeat (and anything else on the socket topic)
            return
        if msg.event == "phx_join":
            await self._join(msg)
            return
        channel = self.channels.get(msg.topic)
        if channel is None:
            self._reply(msg, "error", {"reason": "unmatched topic"})
            return
        if msg.event == "phx_leave":
            self._reply(msg)
            self._close_channel(channel)
        elif msg.event == "access_token":
            self._access_token(msg, channel)
        elif msg.event == "broadcast":
            self.hub.broadcast(self, channel, msg.payload)
            if msg.ref is not None:
                self._reply(msg)
        elif msg.ref is not None:
            self._reply(msg)  # presence and anything unknown: accepted, ignored

    def _identity(self, token: Any) -> Identity:
        """The channel identity for an access_token; the apikey's when there is none."""
        if not isinstance(token, str) or not token:
            return self.apikey
        claims = self.hub.token_claims(token)
        if not isinstance(claims.get("role"), str):
            raise InvalidToken("PGRST301", "the JWT has no role claim")
        return Identity.from_claims(claims)

    async def _join(self, msg: Message) -> None:
        old = self.channels.pop(msg.topic, None)  # a duplicate join replaces the old one
        if old is None and len(self.channels) >= MAX_CHANNELS:
            self._reply(msg, "error", {"reason": "ChannelRateLimitReached: Too many channels"})
            return
        payload = msg.payload
        config = payload.get("config")
        config = config if isinstance(config, dict) else {}
        try:
            identity = self._identity(payload.get("access_token"))
        except InvalidToken as exc:
            reason = "Token has expired" if exc.code == "PGRST303" else exc.message
            self._reply(msg, "error", {"reason": f"InvalidJWTToken: {reason}"})
            return
        try:
            bindings = parse_bindings(config.get("postgres_changes"))
            await self.hub.validate_filters(bindings)
        except BindingError as exc:
            self._reply(msg, "error", {"reason": str(exc)})
            return
        broadcast = config.get("broadcast")
        presence = config.get("presence")
        channel = Channel(
            topic=msg.topic,
            join_ref=msg.join_ref or msg.ref,
            bindings=[],
            identity=identity,
            broadcast_self=isinstance(broadcast, dict) and broadcast.get("self") is True,
        )
        self.channels[msg.topic] = channel
        log.debug("realtime: %s joined as %s with %d binding(s)", msg.topic, identity.role,
                  len(bindings))
        self._reply(msg, "ok", {"postgres_changes": echo(bindings)} if bindings else {})
        if bindings:
            task = asyncio.create_task(self._subscribe(channel, bindings),
                                       name="realtime-subscribe")
            self._subscribing.add(task)
            task.add_done_callback(self._subscribing.discard)
        if isinstance(presence, dict) and presence.get("enabled") is True:
            self._send(Message(msg.topic, "presence_state", {}, None, channel.join_ref))

    async def _subscribe(self, channel: Channel, bindings: list[Binding]) -> None:
        """Make the subscription, as the real server does after its join reply: the
        bindings go live (and "Subscribed to PostgreSQL" is sent) only if every one of them
        matches a table of the publication; otherwise a system error, and no retry."""
        await asyncio.sleep(self.hub.ctx.settings.realtime_subscribe_delay)
        if not self.current(channel):
            return  # left, rejoined or disconnected meanwhile
        try:
            async with self.hub.ctx.admin.connection() as conn:
                published = await published_tables(conn)
        except Exception as exc:  # the real server reports it and tries again later
            log.warning("realtime: cannot subscribe %s now: %s", channel.topic, exc)
            self._system(channel, "postgres_changes", f"{{:error, {exc!s}}}", "error")
            return
        if not self.current(channel):
            return
        missing = first_unpublished(bindings, published)
        if missing is not None:
            log.info("realtime: %s: %s.%s is not in the publication", channel.topic,
                     missing.schema, missing.table or "*")
            self._system(channel, "postgres_changes", unpublished_error(missing), "error")
            return
        channel.bindings = bindings
        self._system(channel, "postgres_changes", SUBSCRIBED, "ok")

    def _system(self, channel: Channel, extension: str, message: str, status: str) -> None:
        payload = {"channel": channel.name, "extension": extension, "message": message,
                   "status": status}
        self._send(Message(channel.topic, "system", payload, None, channel.join_ref))

    def _close_channel(self, channel: Channel) -> None:
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        jr = channel.join_ref
        self._send(Message(channel.topic, "phx_close", {}, jr, jr))

    def _access_token(self, msg: Message, channel: Channel) -> None:
        try:
            channel.identity = self._identity(msg.payload.get("access_token"))
        except InvalidToken as exc:
            # As Supabase: a system error, then the channel is shut down.
            reason = "Token has expired" if exc.code == "PGRST303" else exc.message
            self._system(channel, "system", f"InvalidJWTToken: {reason}", "error")
            self._close_channel(channel)
            return
        if msg.ref is not None:
            self._reply(msg)
