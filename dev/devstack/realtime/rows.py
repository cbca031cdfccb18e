"""What Postgres decides about a change: typed values, filter values, who may see it.

* **Typed records.** wal2json writes values as text (numbers and booleans aside). Supabase
  turns each into ``to_jsonb(value::type)``; we do the same for a whole batch of one table at
  once with ``to_jsonb(jsonb_populate_record(null::<table>, <text values>))``, which runs
  every column's input function (json/jsonb values are passed parsed, so they stay objects).
* **Filter values** are cast to the column's type the same way, once, and cached.
* **Access** (RLS) is checked like Supabase's ``apply_rls``: as the subscriber's role with
  its JWT claims (``set_config('role', …)`` + ``request.jwt.claims``, through the
  ``authenticator`` pool as PostgREST does), a row is visible when
  ``select … from <table> where <pk> = <pk of the change>`` finds it; the columns a
  subscriber receives are those it has SELECT privilege on. service_role bypasses all of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from devstack.realtime.bindings import BindingError, RowFilter

log = logging.getLogger("devstack.realtime")

T = TypeVar("T")
BYPASS_ROLES = frozenset({"service_role"})
_CACHE_LIMIT = 10_000


class TableMissing(LookupError):
    """The table of a filter does not exist (yet)."""


@dataclass(frozen=True)
class TypedRows:
    columns: list[dict[str, str]]  # [{"name", "type": pg typname}] in column order
    records: list[dict[str, Any]]  # to_jsonb of each row, all columns
    rls: bool  # row level security is enabled on the table


@dataclass(frozen=True)
class Identity:
    """Who a channel acts as: the role and the claims of its access token."""

    role: str
    claims: str  # JSON text, for request.jwt.claims

    @property
    def bypasses_rls(self) -> bool:
        return self.role in BYPASS_ROLES

    @property
    def sub(self) -> str:
        sub = json.loads(self.claims).get("sub")
        return sub if isinstance(sub, str) else ""

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Identity:
        role = claims.get("role")
        return cls(role if isinstance(role, str) else "anon", json.dumps(claims, sort_keys=True))


@dataclass(frozen=True)
class Access:
    columns: frozenset[str]  # selectable columns; empty = no SELECT on the table
    visible: frozenset[int]  # indices of the checked keys that RLS lets through


def _table(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table)


_COLUMNS_SQL = """
select coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', t.typname)
                          order by a.attnum), '[]'::jsonb)
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
where n.nspname = %(schema)s and c.relname = %(table)s
"""

_RLS_SQL = """
select c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = %(schema)s and c.relname = %(table)s
"""

_SELECTABLE_SQL = """
select coalesce(array_agg(a.attname::text), '{}')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = %s and c.relname = %s and has_column_privilege(c.oid, a.attnum, 'SELECT')
"""


async def _on_pool(
    pool: AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """Run ``work`` on a pooled connection. A connection error (Postgres restarted under
    the pool) makes the pool check its idle connections, and the work is tried once more."""
    try:
        async with pool.connection() as conn:
            return await work(conn)
    except psycopg.OperationalError as exc:
        log.info("realtime: database connection lost (%s); retrying once", exc)
        await pool.check()
        async with pool.connection() as conn:
            return await work(conn)


class RowOracle:
    """Asks Postgres about rows of a change batch; every method is safe to call concurrently."""

    def __init__(
        self,
        admin: Callable[[], AsyncConnectionPool],
        api: Callable[[], AsyncConnectionPool],
    ) -> None:
        self._admin = admin
        self._api = api
        self._filter_cache: dict[tuple[str, str, RowFilter], list[Any] | None] = {}

    # -- typed records -----------------------------------------------------------------
    async def typed_rows(
        self, schema: str, table: str, rows: Sequence[dict[str, Any]]
    ) -> TypedRows | None:
        """to_jsonb of each row (text values in), or None if Postgres cannot (table gone)."""
        query = sql.SQL(
            "select ({columns}) as columns, ({rls}) as rls, "
            "(select coalesce(jsonb_agg(to_jsonb(r) order by e.n), '[]'::jsonb) "
            " from jsonb_array_elements(%(rows)s) with ordinality as e(v, n) "
            " cross join lateral jsonb_populate_record(null::{tbl}, e.v) as r) as records"
        ).format(columns=sql.SQL(_COLUMNS_SQL), rls=sql.SQL(_RLS_SQL), tbl=_table(schema, table))
        params = {"schema": schema, "table": table, "rows": Jsonb(list(rows))}

        async def work(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(query, params)).fetchone()

        try:
            row = await _on_pool(self._admin(), work)
        except psycopg.Error as exc:
            log.warning("realtime: cannot type rows of %s.%s: %s", schema, table, exc)
            return None
        if row is None:
            return None
        return TypedRows(columns=row[0], rls=bool(row[1]), records=row[2])

    # -- filters -----------------------------------------------------------------------
    async def filter_values(self, schema: str, table: str, row_filter: RowFilter) -> list[Any]:
        """The filter's values cast to the column type, as JSON. Raises BindingError for a
        bad column or value, TableMissing when the table does not exist."""
        query = sql.SQL(
            "select to_jsonb((jsonb_populate_record(null::{tbl}, "
            "jsonb_build_object(%s::text, u.v))).{col}) "
            "from unnest(%s::text[]) with ordinality as u(v, n) order by u.n"
        ).format(tbl=_table(schema, table), col=sql.Identifier(row_filter.column))
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(query, [row_filter.column, list(row_filter.values)])
            return [r[0] for r in await cur.fetchall()]

        try:
            return await _on_pool(self._admin(), work)
        except psycopg.errors.UndefinedTable as exc:
            raise TableMissing(f"{schema}.{table}") from exc
        except psycopg.errors.UndefinedColumn as exc:
            raise BindingError(
                f"invalid column for filter {row_filter.column} on {schema}.{table}"
            ) from exc
        except psycopg.DataError as exc:
            raise BindingError(
                f"invalid value for filter {row_filter.column}: {exc.diag.message_primary}"
            ) from exc

    async def cached_filter_values(
        self, schema: str, table: str, row_filter: RowFilter
    ) -> list[Any] | None:
        """filter_values, cached; None when the filter cannot apply to this table."""
        key = (schema, table, row_filter)
        if key in self._filter_cache:
            return self._filter_cache[key]
        try:
            values: list[Any] | None = await self.filter_values(schema, table, row_filter)
        except (BindingError, TableMissing) as exc:
            log.info("realtime: filter %s does not apply to %s.%s: %s",
                     row_filter, schema, table, exc)
            values = None
        except psycopg.Error as exc:
            log.warning("realtime: filter %s on %s.%s: %s", row_filter, schema, table, exc)
            return None  # transient: not cached
        if len(self._filter_cache) > _CACHE_LIMIT:
            self._filter_cache.clear()
        self._filter_cache[key] = values
        return values

    # -- access ------------------------------------------------------------------------
    async def access(
        self,
        identity: Identity,
        schema: str,
        table: str,
        pk: Sequence[str],
        keys: Sequence[dict[str, Any]],
    ) -> Access:
        """Columns ``identity`` may select, and which of ``keys`` (pk values, text) RLS shows."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> Access:
            async with conn.transaction():
                await conn.execute(
                    "select set_config('role', %s, true), "
                    "set_config('request.jwt.claims', %s, true), "
                    "set_config('request.jwt.claim.sub', %s, true)",
                    [identity.role, identity.claims, identity.sub],
                )
                cur = await conn.execute(_SELECTABLE_SQL, [schema, table])
                row = await cur.fetchone()
                columns = frozenset(row[0]) if row else frozenset()
                if not columns or not keys or not pk:
                    return Access(columns, frozenset())
                tbl = _table(schema, table)
                match = sql.SQL(" and ").join(
                    sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in pk
                )
                query = sql.SQL(
                    "select e.n - 1 from jsonb_array_elements(%s) with ordinality as e(v, n) "
                    "cross join lateral jsonb_populate_record(null::{tbl}, e.v) as k "
                    "where exists (select 1 from {tbl} as t where {match})"
                ).format(tbl=tbl, match=match)
                cur = await conn.execute(query, [Jsonb(list(keys))])
                visible = frozenset(int(r[0]) for r in await cur.fetchall())
                return Access(columns, visible)

        try:
            return await _on_pool(self._api(), work)
        except psycopg.Error as exc:
            log.info("realtime: %s cannot read %s.%s: %s", identity.role, schema, table,
                     str(exc).strip().splitlines()[0] if str(exc) else exc)
            return Access(frozenset(), frozenset())
