"""Realtime wake-ups: INSERTs on job_queue over Supabase Realtime (supabase-py's realtime).

The Python client reconnects on its own only a few times and then stops for good, and it
never notices a half-open socket; so this adapter owns the connection: it subscribes,
watches the channel state, and on any error tears the client down and subscribes again
with capped exponential backoff, forever. Events are only hints (the daemon polls once
after every (re)subscribe), so nothing is lost while it is down.

Subscribed means the server's word, not the join reply: Supabase Realtime answers
``phx_join`` with ``ok`` before the postgres_changes subscription exists, and announces it
later with the system message "Subscribed to PostgreSQL" (realtime-py reports the join
reply as SUBSCRIBED). Only that message counts (and makes the daemon poll once). A table
missing from the ``supabase_realtime`` publication gets a system error instead, which the
server does not retry: it is logged once as an ERROR and retried only every
``UNPUBLISHED_RETRY`` seconds, the daemon polling at its degraded interval meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import RealtimePostgresChangesListenEvent

log = logging.getLogger("worker.realtime")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
LIVENESS_CHECK = 5.0
PENDING_ONLY = "status=eq.pending"


def inserted_row(payload: Any) -> Mapping[str, Any] | None:
    """The record of a postgres_changes INSERT payload; None when it carries none (a row
    over Realtime's size limit arrives with ``errors`` and no record)."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    record = data.get("record") if isinstance(data, Mapping) else None
    return record if isinstance(record, Mapping) and record.get("id") else None


CONFIRM_TIMEOUT = 15.0  # from connect to "Subscribed to PostgreSQL"
SUBSCRIBED = "Subscribed to PostgreSQL"
UNPUBLISHED = "Unable to subscribe to changes"  # the server's error for an unpublished table
UNPUBLISHED_RETRY = 300.0


class Unpublished(Exception):
    """The server refused the postgres_changes subscription (table not published)."""


class RealtimeWakeups:
    def __init__(
        self,
        supabase_url: str,
        api_key: str,
        on_event: Callable[[Mapping[str, Any] | None], None],
        on_state: Callable[[bool], None],
        *,
        table: str = "job_queue",
    ) -> None:
        self._url = f"{supabase_url.rstrip('/')}/realtime/v1"
        self._key = api_key
        self._on_event = on_event
        self._on_state = on_state
        self._table = table
        self.connected = False
        self.subscriptions = 0
        self.unpublished_reported = False

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self._on_state(value)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            lost = asyncio.Event()
            client = AsyncRealtimeClient(
                self._url, token=self._key, auto_reconnect=False, max_retries=1
            )
            unpublished = False
            try:
                await self._subscribe(client, lost)
                failures = 0
                await self._watch(client, lost, stop)
            except Unpublished as exc:
                unpublished = True
                self._report_unpublished(str(exc))
            except Exception as exc:
                log.warning(
                    "realtime subscription failed: %s",
                    exc or type(exc).__name__,
                    extra={"action": "realtime.error"},
                )
            finally:
                self._set_connected(False)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), timeout=2)
            if stop.is_set():
                return
            failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_START * 2 ** min(failures - 1, 8)) * random.uniform(
                0.8, 1.2
            )
            if unpublished:
                delay = UNPUBLISHED_RETRY
            log.info(
                "realtime down; resubscribing in %.1fs (polling meanwhile)",
                delay,
                extra={"action": "realtime.retry"},
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def _report_unpublished(self, message: str) -> None:
        if self.unpublished_reported:
            log.info("realtime still refused: %s", message, extra={"action": "realtime.refused"})
            return
        self.unpublished_reported = True
        log.error(
            "realtime cannot subscribe to INSERTs on %s (is the table in the supabase_realtime "
            "publication?): %s; polling every WORKER_POLL_INTERVAL_DEGRADED meanwhile, "
            "retrying every %.0fs",
            self._table,
            message,
            UNPUBLISHED_RETRY,
            extra={"action": "realtime.unpublished"},
        )

    async def _subscribe(self, client: AsyncRealtimeClient, lost: asyncio.Event) -> None:
        await client.connect()
        loop = asyncio.get_running_loop()
        subscribed = asyncio.Event()
        refused: list[str] = []

        def on_system(payload: Any) -> None:
            try:
                message = str(getattr(payload, "message", ""))
                if SUBSCRIBED in message:
                    loop.call_soon(subscribed.set)
            except Exception:
                log.exception("realtime system callback failed")

        def on_insert(payload: Any) -> None:
            try:  # callbacks run inside the client's listen task: never raise here
                self._on_event(inserted_row(payload))
            except Exception:
                log.exception("wake-up callback failed")

        def on_state(state: RealtimeSubscribeStates, err: Exception | None) -> None:
            try:
                if state == RealtimeSubscribeStates.SUBSCRIBED:
                    # the join reply: the subscription does not exist yet (on_system)
                    log.debug("realtime joined", extra={"action": "realtime.joined"})
                else:
                    if err is not None and UNPUBLISHED in str(err):
                        refused.append(str(err))
                    log.info(
                        "realtime channel %s%s",
                        state.value if hasattr(state, "value") else state,
                        f": {err}" if err else "",
                        extra={"action": "realtime.state"},
                    )
                    loop.call_soon(lost.set)
            except Exception:
                log.exception("realtime state callback failed")

        channel = client.channel("picture-worker-jobs")
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.Insert,
            on_insert,
            table=self._table,
            schema="public",
            filter=PENDING_ONLY,  # a job inserted already claimed wakes nobody
        )
        channel.on_system(on_system)
        await channel.subscribe(on_state)
        await self._confirmed(subscribed, lost)
        if refused:
            raise Unpublished(_server_message(refused[0]))
        if lost.is_set():
            raise ConnectionError("the channel failed before the subscription was confirmed")
        self.subscriptions += 1
        log.info(
            "realtime subscribed to INSERT on %s",
            self._table,
            extra={"action": "realtime.subscribed"},
        )
        self._set_connected(True)

    @staticmethod
    async def _confirmed(subscribed: asyncio.Event, lost: asyncio.Event) -> None:
        """Wait for the server's confirmation, or for the channel to fail first."""
        waiters = [asyncio.create_task(subscribed.wait()), asyncio.create_task(lost.wait())]
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=CONFIRM_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not done:
            raise TimeoutError(f"no {SUBSCRIBED!r} within {CONFIRM_TIMEOUT:.0f}s")

    async def _watch(
        self, client: AsyncRealtimeClient, lost: asyncio.Event, stop: asyncio.Event
    ) -> None:
        while not stop.is_set() and not lost.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=LIVENESS_CHECK)
            listen = getattr(client, "_listen_task", None)
            if not client.is_connected or (listen is not None and listen.done()):
                lost.set()


def _server_message(error: str) -> str:
    """The ``message`` of realtime-py's CHANNEL_ERROR (a JSON dump of the system payload)."""
    try:
        payload = json.loads(error)
    except ValueError:
        return error
    message = payload.get("message") if isinstance(payload, dict) else None
    return str(message) if message else error
