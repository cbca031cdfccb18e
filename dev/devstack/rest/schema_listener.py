"""PostgREST's schema cache reloads: ``LISTEN pgrst`` and reload when told.

PostgREST keeps one connection listening on channel ``pgrst``; ``NOTIFY pgrst`` with an
empty payload, ``'reload schema'`` or ``'reload config'`` makes it load the schema cache
again (the config includes the roles' settings). Hosted projects send the notification from
the ``pgrst_ddl_watch`` event trigger after DDL (dev/devstack/bootstrap.sql reproduces it).

The load is asynchronous: it starts ``schema_reload_delay`` seconds after the notification
(a stand-in for the schema query's own time on a hosted project), so for a short while after
a migration commits, its new function still answers PGRST202 (404). Notifications arriving
meanwhile share that one reload (one arriving while the load runs gets another). When the
listening connection drops, the listener reconnects with backoff and reloads at once, since
notifications may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from devstack.rest.schema_cache import SchemaStore

log = logging.getLogger("devstack.rest")

CHANNEL = "pgrst"
RELOAD_PAYLOADS = frozenset({"", "reload schema", "reload config"})
BACKOFF_START = 0.2
BACKOFF_CAP = 5.0


class SchemaListener:
    def __init__(self, dsn: str, store: SchemaStore, delay: Callable[[], float]) -> None:
        self._dsn = dsn
        self._store = store
        self._delay = delay
        self._task: asyncio.Task[None] | None = None
        self._pending: asyncio.Task[None] | None = None
        self._dirty = False
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rest-schema-listener")

    async def stop(self) -> None:
        for task in (self._task, self._pending):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._pending = None

    async def _run(self) -> None:
        backoff = BACKOFF_START
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            except psycopg.OperationalError as exc:
                log.warning("schema listener cannot connect (%s); retrying in %.1fs",
                            exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_CAP, backoff * 2)
                continue
            backoff = BACKOFF_START
            try:
                async with conn:
                    await conn.execute(f"listen {CHANNEL}")
                    self.listening.set()
                    if not first:  # what changed while we were away is unknown
                        self._schedule(0.0)
                    first = False
                    async for notify in conn.notifies():
                        if notify.payload.strip() in RELOAD_PAYLOADS:
                            self._schedule(self._delay())
            except psycopg.OperationalError as exc:
                log.warning("schema listener lost its connection: %s", exc)
            finally:
                self.listening.clear()

    def _schedule(self, delay: float) -> None:
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(
                self._reload_after(delay), name="rest-schema-reload"
            )

    async def _reload_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        while self._dirty:  # a notification during a load calls for one more load
            self._dirty = False
            try:
                await self._store.reload()
            except (psycopg.Error, OSError) as exc:
                log.warning("schema cache reload failed: %s; retrying", exc)
                self._dirty = True
                await asyncio.sleep(BACKOFF_START)
