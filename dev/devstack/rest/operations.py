"""Plans for each kind of request, and the HTTP outcome of running one.

Planning is pure (schema cache in, SQL out) and may raise ``SchemaMiss``, in which case the
caller reloads the cache and plans again. Running happens inside the request's transaction,
so a failed ``.single()`` check on a write rolls the write back, as PostgREST does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from psycopg import AsyncConnection, AsyncPipeline, sql

from devstack.rest.errors import ApiError, invalid_body, singular_error
from devstack.rest.lookup import find_function, find_table
from devstack.rest.query_ast import Field, QueryParams, SelectField
from devstack.rest.request import Accept, Prefer
from devstack.rest.schema_cache import PgType, SchemaCache
from devstack.rest.sql_build import Builder, Params, Source, qi, table_ident
from devstack.rest.sql_write import (
    MUTATION_ALIAS,
    call_args,
    delete_sql,
    insert_groups,
    insert_sql,
    is_single_unnamed_json,
    rpc_rows_sql,
    rpc_value_sql,
    update_sql,
)

JSON_TYPE = "application/json; charset=utf-8"
OBJECT_TYPE = "application/vnd.pgrst.object+json; charset=utf-8"


@dataclass
class Call:
    method: str
    target: str
    is_rpc: bool
    q: QueryParams
    prefer: Prefer
    accept: Accept
    body: Any = None
    range_offset: int | None = None
    range_limit: int | None = None
    max_rows: int = 0  # PostgREST's db-max-rows: 0 = no cap


def _cap_rows(call: Call) -> None:
    """At most ``max_rows`` rows at the top level, whatever limit the request asked for."""
    if call.max_rows:
        requested = call.q.limit.get(())
        call.q.limit[()] = call.max_rows if requested is None else min(requested, call.max_rows)


@dataclass
class Plan:
    kind: str  # read | insert | update | delete | rpc-set | rpc-one | rpc-value | rpc-void
    params: Params
    query: sql.SQL | sql.Composed | None = None
    minimal: list[sql.Composed] = field(default_factory=list)
    single: bool = False
    count: bool = False
    head: bool = False
    offset: int = 0
    location: tuple[str, tuple[str, ...]] | None = None  # headers-only: table and its pk


@dataclass
class Outcome:
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = JSON_TYPE


def _builder(call: Call, cache: SchemaCache, casts: dict[str, PgType | None]) -> Builder:
    return Builder(cache, call.q, Params(), casts, strip_nulls=call.accept.strip_nulls)


def plan_read(call: Call, cache: SchemaCache, casts: dict[str, PgType | None]) -> Plan:
    table = find_table(cache, call.target)
    q = call.q
    if call.range_offset is not None and () not in q.offset and () not in q.limit:
        q.offset[()] = call.range_offset
        if call.range_limit is not None:
            q.limit[()] = call.range_limit
    _cap_rows(call)
    b = _builder(call, cache, casts)
    source = Source(table.name, tuple(table.columns), table_ident(table.name), table.name)
    query = b.read(source, count=call.prefer.count)
    return Plan("read", b.params, query, single=call.accept.single, count=call.prefer.count,
                head=call.method == "HEAD", offset=q.offset.get((), 0))


def _rows_payload(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list) and all(isinstance(r, dict) for r in body):
        return body
    if isinstance(body, list):
        raise invalid_body("All object keys must match")
    raise invalid_body()


def _representation(b: Builder, name: str, ctes: list[sql.Composed]) -> sql.Composed:
    """``with <writes ... returning *>`` and the select of the written rows, as for a read."""
    table = b.cache.tables[name]
    names = [qi(f"pgrst_m{i}") for i in range(len(ctes))]
    with_items = sql.SQL(", ").join(
        sql.SQL("{} as ({})").format(n, stmt) for n, stmt in zip(names, ctes, strict=True)
    )
    union = sql.SQL(" union all ").join(sql.SQL("select * from {}").format(n) for n in names)
    source = Source(name, tuple(table.columns), sql.SQL("({})").format(union), name)
    return sql.SQL("with {} {}").format(with_items, b.read(source, count=False, filtered=False))


def plan_insert(call: Call, cache: SchemaCache, casts: dict[str, PgType | None]) -> Plan:
    table = find_table(cache, call.target)
    rows = _rows_payload(call.body)
    groups = insert_groups(table, rows, call.q.columns, call.prefer.missing_default)
    ret = call.prefer.ret or "minimal"
    if ret == "headers-only" and table.pk:
        call.q.select = [SelectField(Field(c)) for c in table.pk]
    b = _builder(call, cache, casts)
    plan = Plan("insert", b.params, single=call.accept.single, count=call.prefer.count)
    conflict, resolution = call.q.on_conflict, call.prefer.resolution
    if ret == "minimal" or (ret == "headers-only" and not table.pk):
        plan.minimal = [
            insert_sql(table, g, b.params, on_conflict=conflict, resolution=resolution,
                       returning=False)
            for g in groups if g.rows
        ]
        return plan
    ctes = [
        insert_sql(table, g, b.params, on_conflict=conflict, resolution=resolution,
                   returning=True)
        for g in groups if g.rows or g is groups[0]
    ]
    plan.query = _representation(b, table.name, ctes)
    if ret == "headers-only":
        plan.location = (table.name, table.pk)
    return plan


def plan_update_delete(call: Call, cache: SchemaCache, casts: dict[str, PgType | None]) -> Plan:
    table = find_table(cache, call.target)
    kind = "update" if call.method == "PATCH" else "delete"
    b = _builder(call, cache, casts)
    source = Source(table.name, tuple(table.columns), table_ident(table.name), table.name)
    where = b.where(source, MUTATION_ALIAS, ())
    returning = call.prefer.ret == "representation"
    plan = Plan(kind, b.params, single=call.accept.single, count=call.prefer.count)
    if kind == "update":
        if not isinstance(call.body, dict):
            raise invalid_body()
        values = call.body
        if call.q.columns is not None:
            values = {c: call.body.get(c) for c in call.q.columns}
        if not values:
            plan.query = sql.SQL("select '[]', 0::bigint, null::bigint") if returning else None
            return plan
        stmt = update_sql(table, values, where, b.params, returning=returning)
    else:
        stmt = delete_sql(table, where, returning=returning)
    if returning:
        plan.query = _representation(b, table.name, [stmt])
    else:
        plan.minimal = [stmt]
    return plan


def _rpc_args(call: Call, fn_params: dict[str, PgType]) -> dict[str, Any]:
    """Named arguments: the JSON object posted, or the query parameters of a GET."""
    if call.method == "POST":
        return dict(call.body) if isinstance(call.body, dict) else {}
    args: dict[str, Any] = {}
    for key, value in call.q.rpc_args:
        parsed: Any = value
        pg_type = fn_params.get(key)
        if pg_type is not None and pg_type.name in ("json", "jsonb"):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
        args[key] = parsed
    return args


def plan_rpc(call: Call, cache: SchemaCache, casts: dict[str, PgType | None]) -> Plan:
    if call.method not in ("GET", "HEAD", "POST"):
        raise ApiError(405, "PGRST101", f"Cannot use the {call.method} method on RPC")
    post = call.method == "POST"
    if post and call.body is not None and not isinstance(call.body, dict | list):
        raise invalid_body()
    if not post:
        keys = {k for k, _ in call.q.rpc_args}
    else:
        keys = set(call.body) if isinstance(call.body, dict) else set()
    fn = find_function(cache, call.target, keys, post=post)
    if post and isinstance(call.body, list) and not is_single_unnamed_json(fn):
        raise invalid_body("The request body must be a JSON object of named arguments")
    args = _rpc_args(call, {p.name: p.type for p in fn.params})
    b = _builder(call, cache, casts)
    arg_list, from_args = call_args(fn, args, call.body, b.params)
    head = call.method == "HEAD"
    if not fn.returns_set and fn.kind in ("void", "scalar"):
        kind = "rpc-void" if fn.kind == "void" else "rpc-value"
        return Plan(kind, b.params, rpc_value_sql(fn, arg_list, from_args), head=head)
    scalar_set = fn.kind == "scalar"
    if fn.returns_set:
        _cap_rows(call)
    columns = (fn.name,) if scalar_set else fn.columns
    source = Source(fn.name, columns, qi("pgrst_call"), fn.return_table)
    default_select = len(call.q.select) == 1 and isinstance(call.q.select[0], SelectField) and (
        call.q.select[0].field.name == "*"
    )
    read = b.read(source, count=call.prefer.count,
                  scalar_column=fn.name if scalar_set and default_select else None)
    query = sql.SQL("with {} as materialized ({}) {}").format(
        qi("pgrst_call"), rpc_rows_sql(fn, arg_list, from_args), read
    )
    kind = "rpc-set" if fn.returns_set else "rpc-one"
    return Plan(kind, b.params, query, single=call.accept.single, count=call.prefer.count,
                head=head, offset=call.q.offset.get((), 0))


def content_range(offset: int, page: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    if page > 0 and total != 0:
        return f"{offset}-{offset + page - 1}/{total_text}"
    return f"*/{total_text}"


async def _fetch(conn: AsyncConnection[Any], plan: Plan) -> tuple[str, int, int | None]:
    assert plan.query is not None
    cur = await conn.execute(plan.query, plan.params.values)
    row = await cur.fetchone()
    assert row is not None
    return row[0], int(row[1]), None if row[2] is None else int(row[2])


def _single_body(text: str, page: int) -> bytes:
    if page != 1:
        raise singular_error(page)
    return text[1:-1].strip().encode()


async def _run_read(conn: AsyncConnection[Any], plan: Plan) -> Outcome:
    text, page, total = await _fetch(conn, plan)
    status = 200
    if total is not None:
        if plan.offset > total:
            raise ApiError(
                416, "PGRST103", "Requested range not satisfiable",
                f"An offset of {plan.offset} was requested, but there are only {total} rows.",
                headers={"Content-Range": f"*/{total}"},
            )
        if page < total:
            status = 206
    headers = {"Content-Range": content_range(plan.offset, page, total)}
    if plan.kind == "rpc-one":
        return Outcome(200, text[1:-1].strip().encode() if page else b"null", headers)
    if plan.single:
        body = _single_body(text, page)
        return Outcome(status, None if plan.head else body, headers, OBJECT_TYPE)
    return Outcome(status, None if plan.head else text.encode(), headers)


async def _run_write(
    conn: AsyncConnection[Any], pipeline: AsyncPipeline, plan: Plan
) -> Outcome:
    body: bytes | None = None
    headers: dict[str, str] = {}
    if plan.query is not None:
        text, affected, _ = await _fetch(conn, plan)
        body = _single_body(text, affected) if plan.single else text.encode()
        if plan.location is not None:
            body = None
            rows = json.loads(text)
            if rows:
                table, pk = plan.location
                query = "&".join(f"{quote(c)}=eq.{quote(str(rows[0].get(c)))}" for c in pk)
                headers["Location"] = f"/{quote(table)}?{query}"
    else:
        cursors = [await conn.execute(stmt, plan.params.values) for stmt in plan.minimal]
        await pipeline.sync()  # row counts are known once the results arrived
        affected = sum(max(cur.rowcount, 0) for cur in cursors)
        if plan.single and affected != 1:
            raise singular_error(affected)
    headers["Content-Range"] = f"*/{affected}" if plan.count else "*/*"
    media = OBJECT_TYPE if plan.single else JSON_TYPE
    if plan.kind == "insert":
        return Outcome(201, body, headers, media)
    return Outcome(200 if body is not None else 204, body, headers, media)


async def run(conn: AsyncConnection[Any], pipeline: AsyncPipeline, plan: Plan) -> Outcome:
    """Run a plan inside the request's transaction (in pipeline mode)."""
    if plan.kind in ("read", "rpc-set", "rpc-one"):
        return await _run_read(conn, plan)
    if plan.kind in ("rpc-value", "rpc-void"):
        assert plan.query is not None
        cur = await conn.execute(plan.query, plan.params.values)
        row = await cur.fetchone()
        if plan.kind == "rpc-void":
            return Outcome(204)
        value = row[0] if row is not None and row[0] is not None else "null"
        return Outcome(200, None if plan.head else str(value).encode())
    return await _run_write(conn, pipeline, plan)
