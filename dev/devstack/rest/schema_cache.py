"""What PostgREST knows about the exposed schema, read from the catalogs.

Only schema ``public`` is exposed. The cache holds tables and views with their columns and
primary keys, the foreign keys between them (for embedding), the functions callable as
RPCs with their parameters and return shape, and the settings of the API roles (applied to
each request made as that role, as PostgREST does with ``statement_timeout``).

As in PostgREST, the cache is loaded at start and then only when told: ``NOTIFY pgrst``
(see ``schema_listener``), which hosted projects send from an event trigger after DDL. A
request naming something the cache does not know fails (PGRST202, PGRST205, 42703...)
until the reload has happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

SCHEMA = "public"
log = logging.getLogger("devstack.rest")


@dataclass(frozen=True)
class PgType:
    schema: str
    name: str  # pg_type.typname: "_int4" for int[], so a cast is Identifier(schema, name)


@dataclass(frozen=True)
class Column:
    name: str
    type: PgType
    display: str  # format_type(): "timestamp with time zone"
    nullable: bool
    has_default: bool


@dataclass
class Table:
    name: str
    kind: str  # r, v, m, f, p
    columns: dict[str, Column]
    pk: tuple[str, ...] = ()
    uniques: list[frozenset[str]] = field(default_factory=list)


@dataclass(frozen=True)
class ForeignKey:
    """``table(columns)`` references ``foreign_table(foreign_columns)``."""

    name: str
    table: str
    columns: tuple[str, ...]
    foreign_table: str
    foreign_columns: tuple[str, ...]


@dataclass(frozen=True)
class Param:
    name: str
    type: PgType
    display: str
    has_default: bool


@dataclass
class Function:
    name: str
    params: tuple[Param, ...]
    returns_set: bool
    kind: str  # void | scalar | composite
    return_type: PgType
    return_table: str | None  # a public table/view whose row type the function returns
    columns: tuple[str, ...] | None  # result columns of a composite/table function, if known
    volatility: str

    @property
    def required(self) -> set[str]:
        return {p.name for p in self.params if not p.has_default}


@dataclass
class SchemaCache:
    tables: dict[str, Table]
    foreign_keys: list[ForeignKey]
    functions: dict[str, list[Function]]
    loaded_at: float
    # role -> {setting: value}, from ALTER ROLE ... SET (this database's over the global ones)
    role_settings: dict[str, dict[str, str]] = field(default_factory=dict)


Q_COLUMNS = """
select c.relname, c.relkind::text, a.attname, tn.nspname, t.typname,
       format_type(a.atttypid, a.atttypmod), not a.attnotnull,
       (a.atthasdef or a.attidentity <> '' or a.attgenerated <> '')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_type t on t.oid = a.atttypid
left join pg_namespace tn on tn.oid = t.typnamespace
where n.nspname = %(schema)s and c.relkind in ('r', 'v', 'm', 'f', 'p')
order by c.relname, a.attnum
"""

Q_KEYS = """
select c.relname, con.contype::text,
       array_agg(a.attname order by k.ord) as cols
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
cross join lateral unnest(con.conkey) with ordinality as k(attnum, ord)
join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
where n.nspname = %(schema)s and con.contype in ('p', 'u')
group by con.oid, c.relname, con.contype
"""

Q_FOREIGN_KEYS = """
select con.conname, c.relname, f.relname,
       array_agg(a.attname order by k.ord), array_agg(fa.attname order by k.ord)
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_class f on f.oid = con.confrelid
join pg_namespace fnsp on fnsp.oid = f.relnamespace
cross join lateral unnest(con.conkey, con.confkey) with ordinality as k(attnum, fattnum, ord)
join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
join pg_attribute fa on fa.attrelid = con.confrelid and fa.attnum = k.fattnum
where con.contype = 'f' and n.nspname = %(schema)s and fnsp.nspname = %(schema)s
group by con.oid, con.conname, c.relname, f.relname
order by con.conname
"""

Q_FUNCTIONS = """
select p.proname, p.proretset, p.provolatile::text, p.prorettype = 'void'::regtype,
       rt.typtype::text, rtn.nspname, rt.typname,
       case when rc.relkind in ('r', 'v', 'm', 'f', 'p') and rcn.nspname = %(schema)s
            then rc.relname end,
       (select array_agg(a.attname order by a.attnum) from pg_attribute a
         where a.attrelid = rt.typrelid and a.attnum > 0 and not a.attisdropped),
       coalesce(p.proargmodes::text[], array_fill('i'::text, array[p.pronargs::int])),
       coalesce(p.proargnames, '{}'::text[]),
       (select array_agg(array[tn.nspname::text, t.typname::text, format_type(t.oid, null)]
                         order by u.ord)
          from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality u(oid, ord)
          join pg_type t on t.oid = u.oid
          join pg_namespace tn on tn.oid = t.typnamespace),
       p.pronargdefaults
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
join pg_namespace rtn on rtn.oid = rt.typnamespace
left join pg_class rc on rc.oid = rt.typrelid
left join pg_namespace rcn on rcn.oid = rc.relnamespace
where n.nspname = %(schema)s and p.prokind = 'f'
  and rt.typname not in ('trigger', 'event_trigger', 'internal', 'language_handler')
order by p.proname, p.oid
"""

Q_ROLE_SETTINGS = """
select r.rolname, s.setconfig
from pg_db_role_setting s
join pg_roles r on r.oid = s.setrole
where s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
  and r.rolname in ('anon', 'authenticated', 'service_role')
order by r.rolname, s.setdatabase
"""

Q_TYPE = """
select n.nspname, t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace
where t.oid = to_regtype(%(name)s)
"""


def _function_from_row(row: tuple[Any, ...]) -> Function:
    (name, retset, volatility, is_void, typtype, ret_schema, ret_name, ret_table,
     composite_cols, modes, names, arg_types, n_defaults) = row
    arg_types = arg_types or []
    params: list[Param] = []
    outputs: list[str] = []
    n_inputs = sum(1 for m in modes if m in ("i", "b", "v"))
    seen_inputs = 0
    for i, mode in enumerate(modes):
        arg_name = names[i] if i < len(names) else ""
        schema, typname, display = arg_types[i]
        if mode in ("o", "b", "t"):
            outputs.append(arg_name)
        if mode in ("i", "b", "v"):
            has_default = seen_inputs >= n_inputs - n_defaults
            seen_inputs += 1
            params.append(Param(arg_name, PgType(schema, typname), display, has_default))
    columns: tuple[str, ...] | None = None
    if is_void:
        kind = "void"
    elif typtype == "c":
        kind = "composite"
        columns = tuple(composite_cols or ())
    elif outputs and ret_name == "record":
        kind = "composite"
        columns = tuple(outputs)
    elif ret_name == "record":
        kind = "composite"  # setof record without a column list: columns unknown
    else:
        kind = "scalar"
    return Function(
        name=name,
        params=tuple(params),
        returns_set=bool(retset),
        kind=kind,
        return_type=PgType(ret_schema, ret_name),
        return_table=ret_table,
        columns=columns,
        volatility=volatility,
    )


async def load(conn: psycopg.AsyncConnection[Any]) -> SchemaCache:
    started = time.monotonic()  # the cache describes the catalogs as of (about) now
    args = {"schema": SCHEMA}
    tables: dict[str, Table] = {}
    cur = await conn.execute(Q_COLUMNS, args)
    for relname, relkind, attname, tschema, typname, display, nullable, has_default in (
        await cur.fetchall()
    ):
        table = tables.setdefault(relname, Table(relname, relkind, {}))
        if attname is not None:
            table.columns[attname] = Column(
                attname, PgType(tschema, typname), display, bool(nullable), bool(has_default)
            )
    cur = await conn.execute(Q_KEYS, args)
    for relname, contype, cols in await cur.fetchall():
        keyed = tables.get(relname)
        if keyed is None:
            continue
        if contype == "p":
            keyed.pk = tuple(cols)
        keyed.uniques.append(frozenset(cols))
    cur = await conn.execute(Q_FOREIGN_KEYS, args)
    fks = [
        ForeignKey(name, tbl, tuple(cols), ftbl, tuple(fcols))
        for name, tbl, ftbl, cols, fcols in await cur.fetchall()
    ]
    functions: dict[str, list[Function]] = {}
    cur = await conn.execute(Q_FUNCTIONS, args)
    for row in await cur.fetchall():
        fn = _function_from_row(row)
        functions.setdefault(fn.name, []).append(fn)
    role_settings: dict[str, dict[str, str]] = {}
    cur = await conn.execute(Q_ROLE_SETTINGS)
    for role, config in await cur.fetchall():
        for item in config or ():
            name, _, value = str(item).partition("=")
            role_settings.setdefault(role, {})[name] = value
    return SchemaCache(tables, fks, functions, started, role_settings)


class SchemaStore:
    """The current schema cache: loaded on first use, then replaced by ``reload()`` only."""

    def __init__(self, pool: Callable[[], AsyncConnectionPool]) -> None:
        self._pool = pool
        self._cache: SchemaCache | None = None
        self._lock = asyncio.Lock()
        self._types: dict[str, PgType | None] = {}
        self.reloads = 0

    async def get(self) -> SchemaCache:
        cache = self._cache
        if cache is not None:
            return cache
        async with self._lock:
            return self._cache or await self._load()

    async def reload(self) -> SchemaCache:
        async with self._lock:
            return await self._load()

    async def _load(self) -> SchemaCache:
        async with self._pool().connection() as conn, conn.transaction():
            cache = await load(conn)
        self._cache = cache
        self._types.clear()
        self.reloads += 1
        log.info("schema cache loaded: %d relations, %d functions",
                 len(cache.tables), len(cache.functions))
        return cache

    async def cast_type(self, name: str) -> PgType | None:
        """Resolve a type name used in ``select=col::type`` (cached until the next reload)."""
        if name in self._types:
            return self._types[name]
        resolved: PgType | None = None
        async with self._pool().connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(Q_TYPE, {"name": name})
                    row = await cur.fetchone()
                    resolved = PgType(row[0], row[1]) if row else None
            except psycopg.Error:
                resolved = None  # not a type name Postgres can parse
        self._types[name] = resolved
        return resolved
