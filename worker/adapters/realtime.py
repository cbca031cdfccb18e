"""Realtime wake-ups: INSERTs on job_queue over Supabase Realtime (supabase-py's realtime).

The Python client reconnects on its own only a few times and then stops for good, and it
never notices a half-open socket; so this adapter owns the connection: it subscribes,
watches the channel state, and on any error tears the client down and subscribes again
with capped exponential backoff, forever. Events are only hints (the daemon polls once
after every (re)subscribe), so nothing is lost while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
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
            try:
                await self._subscribe(client, lost)
                failures = 0
                await self._watch(client, lost, stop)
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
            log.info(
                "realtime down; resubscribing in %.1fs (polling meanwhile)",
                delay,
                extra={"action": "realtime.retry"},
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _subscribe(self, client: AsyncRealtimeClient, lost: asyncio.Event) -> None:
        await client.connect()
        loop = asyncio.get_running_loop()
        subscribed = asyncio.Event()

        def on_insert(payload: Any) -> None:
            try:  # callbacks run inside the client's listen task: never raise here
                self._on_event(inserted_row(payload))
            except Exception:
                log.exception("wake-up callback failed")

        def on_state(state: RealtimeSubscribeStates, err: Exception | None) -> None:
            try:
                if state == RealtimeSubscribeStates.SUBSCRIBED:
                    loop.call_soon(subscribed.set)
                else:
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
        await channel.subscribe(on_state)
        await asyncio.wait_for(subscribed.wait(), timeout=15)
        self.subscriptions += 1
        log.info(
            "realtime subscribed to INSERT on %s",
            self._table,
            extra={"action": "realtime.subscribed"},
        )
        self._set_connected(True)

    async def _watch(
        self, client: AsyncRealtimeClient, lost: asyncio.Event, stop: asyncio.Event
    ) -> None:
        while not stop.is_set() and not lost.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=LIVENESS_CHECK)
            listen = getattr(client, "_listen_task", None)
            if not client.is_connected or (listen is not None and listen.done()):
                lost.set()
