"""Write statements (insert, upsert, update, delete) and RPC calls.

Row values travel as one JSON parameter and are typed by Postgres itself
(``json_populate_recordset`` with the table's row type, ``json_to_record`` with the declared
argument types), exactly as PostgREST does it: no value is ever written into the SQL text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from devstack.rest.errors import ApiError, payload_column_not_found
from devstack.rest.schema_cache import Function, Table
from devstack.rest.sql_build import Params, qi, table_ident

MUTATION_ALIAS = qi("pgrst_0")
BODY_ALIAS = qi("pgrst_body")


@dataclass
class InsertGroup:
    """Rows inserted by one statement: all of them provide the same columns."""

    columns: list[str]
    rows: list[dict[str, Any]]


def check_columns(table: Table, names: list[str]) -> None:
    for name in names:
        if name not in table.columns:
            raise payload_column_not_found(table.name, name)


def insert_groups(
    table: Table, rows: list[dict[str, Any]], columns: list[str] | None, missing_default: bool
) -> list[InsertGroup]:
    """Split the payload into statements.

    Missing keys mean NULL: one statement over the union of the keys (or ``columns=``).
    With ``Prefer: missing=default`` a missing key must mean DEFAULT, which a single
    statement cannot express per row, so consecutive rows with the same keys share one.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    check_columns(table, columns)
    if not missing_default:
        return [InsertGroup(columns, rows)]
    groups: list[InsertGroup] = []
    for row in rows:
        present = [c for c in columns if c in row]
        if groups and groups[-1].columns == present:
            groups[-1].rows.append(row)
        else:
            groups.append(InsertGroup(present, [row]))
    return groups or [InsertGroup(columns, [])]


def insert_sql(
    table: Table,
    group: InsertGroup,
    params: Params,
    *,
    on_conflict: list[str] | None,
    resolution: str | None,
    returning: bool,
) -> sql.Composed:
    tbl = table_ident(table.name)
    body = params.add(json.dumps([{c: r.get(c) for c in group.columns} for r in group.rows]))
    if group.columns:
        cols = sql.SQL(", ").join(qi(c) for c in group.columns)
        source = sql.SQL(", ").join(
            sql.SQL("{}.{}").format(BODY_ALIAS, qi(c)) for c in group.columns
        )
        stmt = sql.SQL(
            "insert into {tbl} as {alias} ({cols}) select {source} "
            "from json_populate_recordset(null::{tbl}, {body}::json) as {body_alias}"
        ).format(tbl=tbl, alias=MUTATION_ALIAS, cols=cols, source=source, body=body,
                 body_alias=BODY_ALIAS)
    else:
        # No column given at all: every column takes its default, one row per object.
        stmt = sql.SQL(
            "insert into {tbl} as {alias} "
            "select from json_populate_recordset(null::{tbl}, {body}::json)"
        ).format(tbl=tbl, alias=MUTATION_ALIAS, body=body)
    if resolution is not None:
        target = on_conflict if on_conflict is not None else list(table.pk)
        if not target:
            raise ApiError(
                400, "PGRST100",
                "on_conflict is required for an upsert on a table without primary key",
            )
        check_columns(table, target)
        conflict = sql.SQL(", ").join(qi(c) for c in target)
        if resolution == "merge-duplicates" and group.columns:
            updates = sql.SQL(", ").join(
                sql.SQL("{} = excluded.{}").format(qi(c), qi(c)) for c in group.columns
            )
            stmt = sql.SQL("{} on conflict ({}) do update set {}").format(stmt, conflict, updates)
        else:
            stmt = sql.SQL("{} on conflict ({}) do nothing").format(stmt, conflict)
    if returning:
        stmt = sql.SQL("{} returning {}.*").format(stmt, MUTATION_ALIAS)
    return stmt


def update_sql(
    table: Table,
    values: dict[str, Any],
    where: list[sql.Composable],
    params: Params,
    *,
    returning: bool,
) -> sql.Composed:
    names = list(values)
    check_columns(table, names)
    tbl = table_ident(table.name)
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}.{}").format(qi(c), BODY_ALIAS, qi(c)) for c in names
    )
    body = params.add(json.dumps(values))
    stmt = sql.SQL(
        "update {tbl} as {alias} set {sets} "
        "from (select * from json_populate_record(null::{tbl}, {body}::json)) as {body_alias}"
    ).format(tbl=tbl, alias=MUTATION_ALIAS, sets=sets, body=body, body_alias=BODY_ALIAS)
    if where:
        stmt = sql.SQL("{} where {}").format(stmt, sql.SQL(" and ").join(where))
    if returning:
        stmt = sql.SQL("{} returning {}.*").format(stmt, MUTATION_ALIAS)
    return stmt


def delete_sql(
    table: Table, where: list[sql.Composable], *, returning: bool
) -> sql.Composed:
    stmt = sql.SQL("delete from {} as {}").format(table_ident(table.name), MUTATION_ALIAS)
    if where:
        stmt = sql.SQL("{} where {}").format(stmt, sql.SQL(" and ").join(where))
    if returning:
        stmt = sql.SQL("{} returning {}.*").format(stmt, MUTATION_ALIAS)
    return stmt


# -- RPC ---------------------------------------------------------------------------------------
def is_single_unnamed_json(fn: Function) -> bool:
    return (
        len(fn.params) == 1
        and fn.params[0].name == ""
        and fn.params[0].type.name in ("json", "jsonb")
    )


def match_function(candidates: list[Function], keys: set[str]) -> list[Function]:
    """PostgREST's overload choice: every required argument given, no unknown argument."""
    matches = []
    for fn in candidates:
        names = {p.name for p in fn.params}
        if (fn.required <= keys and keys <= names) or is_single_unnamed_json(fn):
            matches.append(fn)
    if len(matches) > 1:
        exact = [fn for fn in matches if not is_single_unnamed_json(fn)]
        matches = exact or matches
    return matches


def call_args(
    fn: Function, args: dict[str, Any], raw_body: Any, params: Params
) -> tuple[sql.Composable, sql.Composable | None]:
    """The argument list of the call and the FROM item that types the arguments."""
    if is_single_unnamed_json(fn):
        p = fn.params[0]
        value = sql.SQL("{}::{}").format(
            params.add(json.dumps(raw_body)), qi(p.type.schema, p.type.name)
        )
        return value, None
    given = [p for p in fn.params if p.name in args]
    if not given:
        return sql.SQL(""), None
    args_alias = qi("pgrst_args")
    defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(qi(p.name), qi(p.type.schema, p.type.name)) for p in given
    )
    payload = params.add(json.dumps({p.name: args[p.name] for p in given}))
    from_item = sql.SQL("json_to_record({}::json) as {}({})").format(payload, args_alias, defs)
    named = sql.SQL(", ").join(
        sql.SQL("{} := {}.{}").format(qi(p.name), args_alias, qi(p.name)) for p in given
    )
    return named, from_item


def rpc_rows_sql(
    fn: Function, arg_list: sql.Composable, from_args: sql.Composable | None
) -> sql.Composed:
    """The rows of a set-returning or composite function, for a ``with ... as materialized``."""
    call = sql.SQL("{}({})").format(table_ident(fn.name), arg_list)
    result = qi("pgrst_f")
    if fn.kind == "scalar":
        item = sql.SQL("{} as {}({})").format(call, result, qi(fn.name))
    else:
        item = sql.SQL("{} as {}").format(call, result)
    if from_args is None:
        return sql.SQL("select {}.* from {}").format(result, item)
    return sql.SQL("select {}.* from {}, lateral {}").format(result, from_args, item)


def rpc_value_sql(
    fn: Function, arg_list: sql.Composable, from_args: sql.Composable | None
) -> sql.Composed:
    """A scalar or void function: ``select to_json(fn(...))::text``."""
    call = sql.SQL("{}({})").format(table_ident(fn.name), arg_list)
    expr = call if fn.kind == "void" else sql.SQL("to_json({})::text").format(call)
    if from_args is None:
        return sql.SQL("select {}").format(expr)
    return sql.SQL("select {} from {}").format(expr, from_args)
