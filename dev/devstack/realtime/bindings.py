"""postgres_changes bindings of a channel join: parsing, ids and row filters.

A binding is what the client put in ``config.postgres_changes[i]``: event, schema, optional
table and optional filter ``column=op.value``. The join reply echoes each one unchanged with
a non-zero integer ``id`` (the clients pair them by index and compare event/schema/table/
filter strictly); change events name the matching ids.

Filter values are compared the way Postgres would: at join time (or, for a table that does
not exist yet, on its first change) the value is cast to the column's type and turned back
into JSON by Postgres itself (``to_jsonb``), so it compares equal to the record values that
come out of the same ``to_jsonb`` (uuid case, numeric scale, timestamp format...).
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
SCALAR_OPS = frozenset({"eq", "neq", "lt", "lte", "gt", "gte"})
OPS = SCALAR_OPS | {"in"}


class BindingError(ValueError):
    """A join whose postgres_changes cannot be served; the message is the reply's reason."""


@dataclass(frozen=True)
class RowFilter:
    column: str
    op: str
    values: tuple[str, ...]  # the raw text: one value, or the members of in.(...)

    def matches(self, record: dict[str, Any], canonical: Sequence[Any]) -> bool:
        """SQL semantics: a NULL on either side never matches."""
        value = record.get(self.column)
        if value is None:
            return False
        if self.op == "in":
            return any(c is not None and _same(value, c) for c in canonical)
        target = canonical[0] if canonical else None
        if target is None:
            return False
        if self.op == "eq":
            return _same(value, target)
        if self.op == "neq":
            return not _same(value, target)
        return _ordered(self.op, value, target)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _ordered(op: str, a: Any, b: Any) -> bool:
    comparable = (
        (_is_number(a) and _is_number(b))
        or (isinstance(a, str) and isinstance(b, str))
        or (isinstance(a, bool) and isinstance(b, bool))
    )
    if not comparable:
        return False
    if op == "lt":
        return bool(a < b)
    if op == "lte":
        return bool(a <= b)
    if op == "gt":
        return bool(a > b)
    return bool(a >= b)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_filter(text: str) -> RowFilter:
    column, sep, rest = text.partition("=")
    op, dot, value = rest.partition(".")
    column = column.strip()
    if not sep or not dot or not column:
        raise BindingError(f"Error parsing `filter` params: {text!r} is not column=op.value")
    if op not in OPS:
        raise BindingError(
            f"Error parsing `filter` params: unsupported operator {op!r} "
            f"(supported: {', '.join(sorted(OPS))})"
        )
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise BindingError(f"Error parsing `filter` params: in.(a,b) expected in {text!r}")
        # Members are comma separated; a double-quoted member may contain commas.
        values = tuple(m.strip() for m in next(csv.reader([value[1:-1]], skipinitialspace=True),
                                               []))
        if not values or values == ("",):
            raise BindingError(f"Error parsing `filter` params: empty in.() list in {text!r}")
        return RowFilter(column, op, values)
    return RowFilter(column, op, (value,))


@dataclass(frozen=True)
class Binding:
    params: dict[str, Any]  # exactly what the client sent, for the echo
    id: int
    event: str  # upper case
    schema: str  # "*" matches every schema
    table: str | None  # None matches every table
    filter: RowFilter | None = None

    def watches(self, schema: str, table: str, change_type: str) -> bool:
        return (
            (self.event == "*" or self.event == change_type)
            and (self.schema == "*" or self.schema == schema)
            and (self.table is None or self.table == table)
        )


def binding_id(event: str, schema: str, table: str | None, filter_text: str | None) -> int:
    """Stable, non-zero, positive 31-bit id: identical params share it (as on Supabase)."""
    key = json.dumps([event, schema, table, filter_text], separators=(",", ":"))
    return (zlib.crc32(key.encode()) & 0x7FFFFFFF) or 1


def parse_bindings(raw: Any) -> list[Binding]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BindingError("postgres_changes must be a list")
    out: list[Binding] = []
    for item in raw:
        if not isinstance(item, dict):
            raise BindingError("each postgres_changes entry must be an object")
        event = item.get("event")
        schema = item.get("schema", "public")
        table = item.get("table")
        filter_text = item.get("filter")
        if not isinstance(event, str) or event.upper() not in EVENTS:
            raise BindingError(f"invalid postgres_changes event {event!r}")
        if not isinstance(schema, str) or not schema:
            raise BindingError("postgres_changes schema must be a non-empty string")
        if table is not None and not isinstance(table, str):
            raise BindingError("postgres_changes table must be a string")
        if filter_text is not None and not isinstance(filter_text, str):
            raise BindingError("postgres_changes filter must be a string")
        row_filter = parse_filter(filter_text) if filter_text else None
        out.append(
            Binding(
                params=item,
                id=binding_id(event, schema, table, filter_text),
                event=event.upper(),
                schema=schema,
                table=None if table in (None, "", "*") else table,
                filter=row_filter,
            )
        )
    return out


def echo(bindings: Sequence[Binding]) -> list[dict[str, Any]]:
    """The join reply's postgres_changes: the client's entries, in order, plus their id."""
    return [{**b.params, "id": b.id} for b in bindings]
