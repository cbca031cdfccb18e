"""Row changes from the WAL: a temporary wal2json logical slot, polled.

Why logical decoding (and not triggers or LISTEN/NOTIFY):

* **Same source as Supabase.** Supabase Realtime's ``postgres_changes`` reads a logical
  replication slot with the wal2json plugin; its replication poller calls
  ``pg_logical_slot_get_changes(...)`` in a loop with the publication's tables as
  ``add-tables``. We do the same with the same options, so what a client sees (which tables,
  which columns, ``old_record`` = the replica identity) follows the same rules.
* **Commit order.** Decoding returns whole transactions in commit order, each change with
  its commit timestamp; a trigger + NOTIFY scheme delivers in the order statements ran and
  cannot see commit time.
* **Nothing in user schemas.** No trigger, function or queue table is added to the project's
  schema, so the database under test is exactly what the migrations made; only tables in
  the ``supabase_realtime`` publication emit, which the migrations control.

The slot is TEMPORARY: it belongs to one superuser connection and disappears with it. If
Postgres restarts, the poller reconnects and creates a new slot; changes committed while
no slot existed are lost, as on Supabase (Realtime never replays).

With ``synchronous_commit = off`` (the test stacks run that way) a commit becomes decodable
only once the WAL writer flushes it, up to ~0.6 s later. Each poll therefore first forces a
flush when there is unflushed WAL, by committing an (ignored) transactional logical message
with ``synchronous_commit = on`` on our own session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

log = logging.getLogger("devstack.realtime")

PUBLICATION = "supabase_realtime"
FLUSH_PREFIX = "devstack-realtime-flush"
JSON_TYPE_OIDS = frozenset({114, 3802})  # json, jsonb
_ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}


@dataclass(frozen=True)
class RawColumn:
    name: str
    type: str  # wal2json's format_type(), e.g. "timestamp with time zone"
    typeoid: int | None
    value: Any  # str | int | Decimal | bool | None, as wal2json wrote it

    def as_text(self) -> Any:
        """The value for jsonb_populate_record: text, or the parsed JSON for json columns."""
        v = self.value
        if v is None:
            return None
        if isinstance(v, bool):
            return "true" if v else "false"
        if self.typeoid in JSON_TYPE_OIDS and isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return v
        return str(v)

    def as_json(self) -> Any:
        """Best effort typed value when Postgres cannot convert (table gone)."""
        v = self.value
        if isinstance(v, Decimal):
            return int(v) if v == v.to_integral_value() else float(v)
        if self.typeoid in JSON_TYPE_OIDS and isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v


@dataclass(frozen=True)
class Change:
    schema: str
    table: str
    type: str  # INSERT | UPDATE | DELETE
    commit_timestamp: str  # 2024-01-01T00:00:00.000Z
    columns: tuple[RawColumn, ...]  # new row (INSERT, UPDATE)
    identity: tuple[RawColumn, ...]  # old key (UPDATE, DELETE)
    pk: tuple[str, ...]


def format_commit_timestamp(text: str) -> str:
    """wal2json's "2024-01-01 12:00:00.123456+00" -> "2024-01-01T12:00:00.123Z" (Supabase)."""
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _columns(raw: Any) -> tuple[RawColumn, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        RawColumn(str(c["name"]), str(c.get("type", "")), c.get("typeoid"), c.get("value"))
        for c in raw
        if isinstance(c, dict) and "name" in c
    )


def parse_change(data: str) -> Change | None:
    """One wal2json format-version 2 row; None for anything that is not a row change."""
    row = json.loads(data, parse_float=Decimal)
    change_type = _ACTIONS.get(row.get("action"))
    if change_type is None:
        return None
    pk = tuple(str(c["name"]) for c in row.get("pk") or () if isinstance(c, dict))
    return Change(
        schema=row["schema"],
        table=row["table"],
        type=change_type,
        commit_timestamp=format_commit_timestamp(str(row.get("timestamp", ""))),
        columns=_columns(row.get("columns")),
        identity=_columns(row.get("identity")),
        pk=pk,
    )


def wal2json_table(schema: str, table: str) -> str:
    """schema.table for wal2json's add-tables, special characters backslash-escaped."""

    def esc(name: str) -> str:
        return "".join("\\" + ch if ch in "\\,.* '" else ch for ch in name)

    return f"{esc(schema)}.{esc(table)}"


_PUBLICATION_SQL = """
select p.pubinsert, p.pubupdate, p.pubdelete,
       coalesce(array_agg(array[t.schemaname::text, t.tablename::text] order by t.schemaname,
                          t.tablename) filter (where t.tablename is not null), '{}')
from pg_publication p
left join pg_publication_tables t on t.pubname = p.pubname
where p.pubname = %s
group by p.pubname, p.pubinsert, p.pubupdate, p.pubdelete
"""

_CHANGES_SQL = """
select data from pg_logical_slot_get_changes(
  %(slot)s, %(upto)s::pg_lsn, %(max)s,
  'format-version', '2', 'include-types', '1', 'include-type-oids', '1',
  'include-timestamp', '1', 'include-pk', '1', 'include-transaction', '0',
  'filter-msg-prefixes', %(prefix)s, 'actions', %(actions)s, 'add-tables', %(tables)s)
"""

_POSITION_SQL = """
select pg_current_wal_insert_lsn() > pg_current_wal_flush_lsn(),
       pg_current_wal_flush_lsn()::text,
       coalesce((select confirmed_flush_lsn >= pg_current_wal_flush_lsn()
                 from pg_replication_slots where slot_name = %s), false)
"""

# Committed with synchronous_commit = on, this flushes every earlier (async) commit too.
_FLUSH_SQL = "select pg_logical_emit_message(true, %s, '')"

ChangeHandler = Callable[[Sequence[Change]], Awaitable[None]]


class WalPoller:
    """Polls a temporary wal2json slot and hands each batch of changes to ``handler``.

    Batches are handled one at a time, in commit order; the next poll waits for the
    handler. A handler error is logged and the batch is dropped (the slot has moved on).
    """

    def __init__(
        self,
        dsn: str,
        handler: ChangeHandler,
        *,
        publication: str = PUBLICATION,
        interval: float = 0.1,
        max_changes: int = 500,
    ) -> None:
        self.dsn = dsn
        self.handler = handler
        self.publication = publication
        self.interval = interval
        self.max_changes = max_changes
        self.ready = asyncio.Event()  # a slot exists and is being polled
        self.slot_name: str | None = None
        self._polled = False  # the current session got as far as polling

    async def run(self) -> None:
        """Forever: connect, create the slot, poll; on any database error start over."""
        backoff = 0.2
        while True:
            self._polled = False
            try:
                await self._session()
            except (psycopg.Error, OSError) as exc:
                if self._polled:
                    backoff = 0.2  # it worked until now: retry quickly
                log.warning("realtime: WAL poller lost its connection (%s); retrying in %.1fs",
                            str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__,
                            backoff)
            except Exception:  # a bug must not end Realtime for the rest of the run
                log.exception("realtime: WAL poller failed; restarting it in %.1fs", backoff)
            self.ready.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _session(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=5, application_name="devstack-realtime"
        )
        try:
            await conn.execute("set synchronous_commit = on")
            async_commit = await self._server_commits_async(conn)
            slot = f"devstack_realtime_{os.getpid()}_{secrets.token_hex(4)}"
            await conn.execute(
                "select pg_create_logical_replication_slot(%s, 'wal2json', true)", [slot]
            )
            self.slot_name = slot
            self.ready.set()
            self._polled = True
            log.info("realtime: decoding WAL through temporary slot %s", slot)
            while True:
                batch, nrows = await self._poll(conn, slot, async_commit)
                if batch:
                    await self._deliver(batch)
                if nrows < self.max_changes:
                    await asyncio.sleep(self.interval)
        finally:
            self.ready.clear()
            self.slot_name = None
            await conn.close()

    async def _server_commits_async(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute(
            "select reset_val from pg_settings where name = 'synchronous_commit'"
        )
        row = await cur.fetchone()
        return row is not None and row[0] == "off"

    async def _poll(
        self, conn: psycopg.AsyncConnection[Any], slot: str, async_commit: bool
    ) -> tuple[list[Change], int]:
        """One poll: (the row changes, how many rows the slot returned)."""
        # Read the flush position first, then the publication: every transaction decoded
        # (commit < upto) is then visible to the publication read.
        position = await (await conn.execute(_POSITION_SQL, [slot])).fetchone()
        if position is not None and position[0] and async_commit:
            await conn.execute(_FLUSH_SQL, [FLUSH_PREFIX])
            position = await (await conn.execute(_POSITION_SQL, [slot])).fetchone()
        if position is None or position[2]:
            return [], 0  # nothing written since the last poll: skip the decoding setup
        upto = position[1]
        pub = await (await conn.execute(_PUBLICATION_SQL, [self.publication])).fetchone()
        actions, tables = "insert", ""  # an empty add-tables makes wal2json skip every table
        if pub is not None:
            pubinsert, pubupdate, pubdelete, names = pub
            flags = (("insert", pubinsert), ("update", pubupdate), ("delete", pubdelete))
            if any(on for _, on in flags):
                actions = ",".join(a for a, on in flags if on)
                tables = ",".join(wal2json_table(s, t) for s, t in names)
        cur = await conn.execute(
            _CHANGES_SQL,
            {
                "slot": slot,
                "upto": upto,
                "max": self.max_changes,
                "prefix": FLUSH_PREFIX,
                "actions": actions,
                "tables": tables,
            },
        )
        rows = await cur.fetchall()
        changes: list[Change] = []
        for (data,) in rows:
            try:
                change = parse_change(data)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("realtime: undecodable wal2json row skipped: %s", exc)
                continue
            if change is not None:
                changes.append(change)
        return changes, len(rows)

    async def _deliver(self, batch: list[Change]) -> None:
        try:
            await self.handler(batch)
        except Exception:
            log.exception("realtime: delivering %d change(s) failed; they are dropped",
                          len(batch))
