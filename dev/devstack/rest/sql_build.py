"""Read queries: select lists with embedding, filters, logic trees, order and paging.

Every identifier reaches SQL through ``qi`` (``psycopg.sql.Identifier``) after it was checked
against the schema cache; every value through a named placeholder. The JSON of the response
is built by Postgres (``json_agg``), so values render exactly as PostgREST renders them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from devstack.rest.errors import ApiError, SchemaMiss, column_not_found
from devstack.rest.query_ast import (
    Field,
    Filter,
    LogicTree,
    OpExpr,
    OrderTerm,
    QueryParams,
    SelectField,
    SelectItem,
    SelectRelation,
)
from devstack.rest.schema_cache import SCHEMA, ForeignKey, PgType, SchemaCache

_BINARY_OPS = {
    "eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
    "like": "like", "ilike": "ilike", "match": "~", "imatch": "~*",
    "cs": "@>", "cd": "<@", "ov": "&&", "sl": "<<", "sr": ">>", "nxr": "&<", "nxl": "&>",
    "adj": "-|-", "isdistinct": "is distinct from",
}
_FTS_FUNCTIONS = {
    "fts": "to_tsquery", "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery", "wfts": "websearch_to_tsquery",
}
_IS_VALUES = {"null": "null", "unknown": "unknown", "true": "true", "false": "false"}


def qi(*names: str) -> sql.Identifier:
    """An identifier; ``%`` is doubled because psycopg scans the whole query for placeholders."""
    return sql.Identifier(*(n.replace("%", "%%") for n in names))


def table_ident(name: str) -> sql.Identifier:
    return qi(SCHEMA, name)


class Params:
    """Named placeholders and their values, in one dict for ``cursor.execute``."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> sql.Composable:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return sql.Placeholder(name)


@dataclass
class Source:
    """Rows a level of the query reads: a table, a view, or the rows of a function call."""

    name: str  # for messages and relationship lookups
    columns: tuple[str, ...] | None  # None: unknown (no check)
    from_item: sql.Composable
    relation: str | None = None  # table whose foreign keys apply, if any


@dataclass
class Relationship:
    fk: ForeignKey
    target: str
    to_one: bool
    pairs: tuple[tuple[str, str], ...]  # (origin column, target column)


@dataclass
class Builder:
    cache: SchemaCache
    q: QueryParams
    params: Params
    casts: dict[str, PgType | None] = field(default_factory=dict)
    strip_nulls: bool = False
    _aliases: int = 0

    def alias(self) -> sql.Identifier:
        self._aliases += 1
        return qi(f"pgrst_{self._aliases}")

    # -- fields and conditions ---------------------------------------------------------
    def column(self, source: Source, alias: sql.Composable, fld: Field) -> sql.Composable:
        if source.columns is not None and fld.name not in source.columns:
            raise column_not_found(source.name, fld.name)
        expr: sql.Composable = sql.SQL("{}.{}").format(alias, qi(fld.name))
        for step in fld.path:
            key = (
                sql.SQL("{}::int").format(self.params.add(int(step.key)))
                if step.index
                else sql.SQL("{}::text").format(self.params.add(step.key))
            )
            expr = sql.SQL("({} {} {})").format(expr, sql.SQL(step.arrow), key)
        return expr

    def condition(self, expr: sql.Composable, op: OpExpr) -> sql.Composable:
        cond: sql.Composable
        if op.op == "in":
            assert isinstance(op.value, tuple)
            if not op.value:
                cond = sql.SQL("false")
            else:
                values = sql.SQL(", ").join(self.params.add(v) for v in op.value)
                cond = sql.SQL("{} in ({})").format(expr, values)
        elif op.op == "is":
            cond = sql.SQL("{} is {}").format(expr, sql.SQL(_IS_VALUES[str(op.value)]))
        elif op.op in _FTS_FUNCTIONS:
            fn = sql.SQL(_FTS_FUNCTIONS[op.op])
            value = self.params.add(op.value)
            if op.lang is not None:
                lang = self.params.add(op.lang)
                cond = sql.SQL("{} @@ {}({}::regconfig, {})").format(expr, fn, lang, value)
            else:
                cond = sql.SQL("{} @@ {}({})").format(expr, fn, value)
        else:
            value_text = str(op.value)
            if op.op in ("like", "ilike"):
                value_text = value_text.replace("*", "%")
            operator = sql.SQL(_BINARY_OPS[op.op])
            value = self.params.add(value_text)
            if op.quantifier is not None:
                cond = sql.SQL("{} {} {}({})").format(expr, operator, sql.SQL(op.quantifier), value)
            else:
                cond = sql.SQL("{} {} {}").format(expr, operator, value)
        return sql.SQL("not ({})").format(cond) if op.negated else cond

    def filter_cond(self, source: Source, alias: sql.Composable, flt: Filter) -> sql.Composable:
        return self.condition(self.column(source, alias, flt.field), flt.expr)

    def logic_cond(self, source: Source, alias: sql.Composable, tree: LogicTree) -> sql.Composable:
        parts = [
            self.logic_cond(source, alias, child)
            if isinstance(child, LogicTree)
            else self.filter_cond(source, alias, child)
            for child in tree.children
        ]
        joined = sql.SQL(f" {tree.op} ").join(parts)
        return sql.SQL("not ({})" if tree.negated else "({})").format(joined)

    def where(
        self, source: Source, alias: sql.Composable, path: tuple[str, ...]
    ) -> list[sql.Composable]:
        conds = [self.filter_cond(source, alias, f) for p, f in self.q.filters if p == path]
        conds += [self.logic_cond(source, alias, t) for p, t in self.q.logic if p == path]
        return conds

    # -- relationships -------------------------------------------------------------------
    def relationship(self, origin: Source, rel: SelectRelation) -> Relationship:
        found: list[Relationship] = []
        for fk in self.cache.foreign_keys if origin.relation else ():
            single = fk.columns[0] if len(fk.columns) == 1 else None
            if fk.table == origin.relation and rel.name in (fk.foreign_table, fk.name, single):
                pairs = tuple(zip(fk.columns, fk.foreign_columns, strict=True))
                found.append(Relationship(fk, fk.foreign_table, True, pairs))
            if fk.foreign_table == origin.relation and rel.name in (fk.table, fk.name):
                target = self.cache.tables.get(fk.table)
                one = target is not None and frozenset(fk.columns) in target.uniques
                pairs = tuple(zip(fk.foreign_columns, fk.columns, strict=True))
                found.append(Relationship(fk, fk.table, one, pairs))
        if rel.hint is not None:
            hint = rel.hint
            found = [
                r for r in found
                if hint in (r.fk.name, r.target, *r.fk.columns, *r.fk.foreign_columns)
            ]
        if not found:
            raise self._no_relationship(origin, rel)
        if len(found) > 1:
            options = ", ".join(f"'{r.target}!{r.fk.name}'" for r in found)
            raise ApiError(
                300, "PGRST201",
                f"Could not embed because more than one relationship was found for "
                f"'{origin.name}' and '{rel.name}'",
                None,
                f"Try changing '{rel.name}' to one of the following: {options}. "
                "Find the desired relationship in the 'details' key.",
            )
        return found[0]

    def _no_relationship(self, origin: Source, rel: SelectRelation) -> ApiError:
        hint_part = f"' using the hint '{rel.hint}" if rel.hint else ""
        known = [fk.foreign_table for fk in self.cache.foreign_keys if fk.table == origin.relation]
        known += [fk.table for fk in self.cache.foreign_keys if fk.foreign_table == origin.relation]
        close = difflib.get_close_matches(rel.name, known, n=1, cutoff=0.6)
        cls = SchemaMiss if rel.name not in self.cache.tables else ApiError
        return cls(
            400, "PGRST200",
            f"Could not find a relationship between '{origin.name}' and '{rel.name}' "
            "in the schema cache",
            f"Searched for a foreign key relationship between '{origin.name}' and '{rel.name}"
            f"{hint_part}' in the schema '{SCHEMA}', but no matches were found.",
            f"Perhaps you meant '{close[0]}' instead of '{rel.name}'." if close else None,
        )

    # -- select lists ----------------------------------------------------------------------
    def cast(self, expr: sql.Composable, name: str) -> sql.Composable:
        pg_type = self.casts.get(name)
        if pg_type is None:
            raise ApiError(400, "42704", f'type "{name}" does not exist')
        return sql.SQL("cast({} as {})").format(expr, qi(pg_type.schema, pg_type.name))

    def select_list(
        self, source: Source, alias: sql.Composable, items: list[SelectItem], path: tuple[str, ...]
    ) -> tuple[sql.Composable, list[sql.Composable], dict[str, sql.Composable]]:
        """The select list, the parent conditions of !inner embeds, and to-one embeds by name."""
        out: list[sql.Composable] = []
        inner: list[sql.Composable] = []
        to_one: dict[str, sql.Composable] = {}
        for item in items:
            if isinstance(item, SelectField):
                if item.field.name == "*" and not item.field.path:
                    out.append(sql.SQL("{}.*").format(alias))
                    continue
                expr = self.column(source, alias, item.field)
                if item.cast:
                    expr = self.cast(expr, item.cast)
                name = item.alias or item.field.output_name
                out.append(sql.SQL("{} as {}").format(expr, qi(name)))
                continue
            embed, exists, rel_info = self.embed(source, alias, item, path)
            out.append(embed)
            if exists is not None:
                inner.append(exists)
            if rel_info is not None:
                to_one[item.alias or item.name] = rel_info
        return sql.SQL(", ").join(out), inner, to_one

    def embed(
        self, origin: Source, parent: sql.Composable, item: SelectRelation, path: tuple[str, ...]
    ) -> tuple[sql.Composable, sql.Composable | None, sql.Composable | None]:
        rel = self.relationship(origin, item)
        table = self.cache.tables[rel.target]
        child = Source(rel.target, tuple(table.columns), table_ident(rel.target), rel.target)
        name = item.alias or item.name
        child_path = (*path, name)
        alias = self.alias()
        join = [
            sql.SQL("{}.{} = {}.{}").format(alias, qi(tcol), parent, qi(ocol))
            for ocol, tcol in rel.pairs
        ]
        conds = join + self.where(child, alias, child_path)
        columns, inner, _ = self.select_list(child, alias, item.children, child_path)
        conds += inner
        where = sql.SQL(" and ").join(conds)
        body = sql.SQL("select {} from {} as {} where {}").format(
            columns, child.from_item, alias, where
        )
        row = self.alias()
        exists = None
        if item.join == "inner":
            exists = sql.SQL("exists (select 1 from {} as {} where {})").format(
                child.from_item, alias, where
            )
        if rel.to_one:
            expr = sql.SQL("(select row_to_json({row}) from ({body} limit 1) as {row})").format(
                row=row, body=body
            )
            return sql.SQL("{} as {}").format(expr, qi(name)), exists, expr
        body = sql.Composed([body, self.order_paging(child, alias, child_path, {})])
        expr = sql.SQL(
            "coalesce((select json_agg({row}) from ({body}) as {row}), '[]'::json)"
        ).format(row=row, body=body)
        return sql.SQL("{} as {}").format(expr, qi(name)), exists, None

    def order_paging(
        self,
        source: Source,
        alias: sql.Composable,
        path: tuple[str, ...],
        to_one: dict[str, sql.Composable],
        *,
        paging: bool = True,
    ) -> sql.Composable:
        parts: list[sql.Composable] = []
        terms = self.q.order.get(path, [])
        if terms:
            parts.append(
                sql.SQL(" order by {}").format(
                    sql.SQL(", ").join(self.order_term(source, alias, t, to_one) for t in terms)
                )
            )
        if paging and path in self.q.limit:
            parts.append(sql.SQL(" limit {}").format(self.params.add(self.q.limit[path])))
        if paging and path in self.q.offset:
            parts.append(sql.SQL(" offset {}").format(self.params.add(self.q.offset[path])))
        return sql.Composed(parts)

    def order_term(
        self,
        source: Source,
        alias: sql.Composable,
        term: OrderTerm,
        to_one: dict[str, sql.Composable],
    ) -> sql.Composable:
        if term.relation is None:
            expr = self.column(source, alias, term.field)
        else:
            embedded = to_one.get(term.relation)
            if embedded is None:
                raise ApiError(
                    400, "PGRST108",
                    f"'{term.relation}' is not an embedded resource in this request",
                    None,
                    f"Verify that '{term.relation}' is included in the 'select' query parameter.",
                )
            key = self.params.add(term.field.name)
            expr = sql.SQL("({} ->> {}::text)").format(embedded, key)
        direction = sql.SQL(" desc" if term.desc else " asc")
        nulls = sql.SQL({"first": " nulls first", "last": " nulls last", None: ""}[term.nulls])
        return sql.Composed([expr, direction, nulls])

    # -- whole statements ------------------------------------------------------------------
    def read(
        self,
        source: Source,
        *,
        count: bool,
        filtered: bool = True,
        scalar_column: str | None = None,
    ) -> sql.Composed:
        """``select <json text>, <rows in page>, <total or null>`` over ``source``."""
        alias = self.alias()
        columns, inner, to_one = self.select_list(source, alias, self.q.select, ())
        conds = (self.where(source, alias, ()) if filtered else []) + inner
        where = sql.SQL(" where {}").format(sql.SQL(" and ").join(conds)) if conds else sql.SQL("")
        # The rows of a write are already chosen: only their order applies.
        paging = self.order_paging(source, alias, (), to_one, paging=filtered)
        page = sql.SQL("select {} from {} as {}{}{}").format(
            columns, source.from_item, alias, where, paging
        )
        total: sql.Composable = sql.SQL("null::bigint")
        if count:
            total = sql.SQL("(select count(*) from {} as {}{})").format(
                source.from_item, alias, where
            )
        row = qi("pgrst_t")
        element: sql.Composable = row
        if scalar_column is not None:
            element = sql.SQL("{}.{}").format(row, qi(scalar_column))
        agg: sql.Composable = sql.SQL("json_agg({})").format(element)
        if self.strip_nulls:
            agg = sql.SQL("json_strip_nulls({})").format(agg)
        return sql.SQL(
            "select coalesce({}, '[]'::json)::text, count(*), {} from ({}) as {}"
        ).format(agg, total, page, row)
