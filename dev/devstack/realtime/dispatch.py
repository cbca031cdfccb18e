"""Fan a batch of row changes out to the channels whose bindings match, in commit order.

For one batch:
1. find, per change, the channels with a binding on its schema/table/event;
2. type the rows of each table with one query (``RowOracle.typed_rows``);
3. apply the bindings' filters to the new record (DELETEs are not filtered, as on Supabase);
4. for subscribers that do not bypass RLS, ask Postgres once per (identity, table) which
   rows they may see and which columns they may select (DELETEs: columns only);
5. send one ``postgres_changes`` frame per change per channel, naming the matching ids.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devstack.realtime import protocol
from devstack.realtime.bindings import Binding, RowFilter
from devstack.realtime.changes import Change
from devstack.realtime.connection import Channel, Connection
from devstack.realtime.rows import Access, Identity, RowOracle

_ACCESS_CONCURRENCY = 8
_DENIED: frozenset[str] = frozenset({"\0denied"})  # marker: deliver nothing

_AccessMap = dict[tuple[Identity, str, str], tuple[Access, dict[int, int]]]


@dataclass
class _Target:
    conn: Connection
    channel: Channel
    identity: Identity  # as it was when the batch started
    bindings: list[Binding]
    ids: list[int] = field(default_factory=list)


@dataclass
class _Row:
    change: Change
    targets: list[_Target]
    columns: list[dict[str, str]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    old_record: dict[str, Any] | None = None


def _restrict(values: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {n: values.get(n) for n in names}


async def _type_rows(oracle: RowOracle, rows: list[_Row]) -> None:
    """Fill columns/record/old_record of every row, one query per table."""
    by_table: dict[tuple[str, str], list[_Row]] = defaultdict(list)
    for row in rows:
        by_table[(row.change.schema, row.change.table)].append(row)

    async def one_table(schema: str, table: str, group: list[_Row]) -> None:
        inputs: list[dict[str, Any]] = []
        for row in group:
            inputs.append({c.name: c.as_text() for c in row.change.columns})
            inputs.append({c.name: c.as_text() for c in row.change.identity})
        typed = await oracle.typed_rows(schema, table, inputs)
        for i, row in enumerate(group):
            ch = row.change
            if typed is not None and len(typed.records) == len(inputs):
                new, old = typed.records[2 * i], typed.records[2 * i + 1]
                row.columns = typed.columns
            else:  # the table is gone: wal2json's own values and type names
                new = {c.name: c.as_json() for c in ch.columns}
                old = {c.name: c.as_json() for c in ch.identity}
                row.columns = [{"name": c.name, "type": c.type} for c in ch.columns or ch.identity]
            if ch.type != "DELETE":
                record = _restrict(new, [c.name for c in ch.columns])
                for c in ch.identity:  # unchanged TOAST values come from the old row
                    record.setdefault(c.name, old.get(c.name))
                row.record = record
            if ch.type != "INSERT":
                names = [c.name for c in ch.identity]
                if ch.type == "DELETE" and (typed is None or typed.rls):
                    names = [n for n in names if n in ch.pk]  # RLS cannot secure deletes
                row.old_record = _restrict(old, names)

    await asyncio.gather(*(one_table(s, t, g) for (s, t), g in by_table.items()))


async def _filter_values(
    oracle: RowOracle, rows: list[_Row]
) -> dict[tuple[str, str, RowFilter], list[Any] | None]:
    wanted = {
        (row.change.schema, row.change.table, b.filter)
        for row in rows
        if row.change.type != "DELETE"
        for target in row.targets
        for b in target.bindings
        if b.filter is not None
    }
    keys = list(wanted)
    values = await asyncio.gather(*(oracle.cached_filter_values(s, t, f) for s, t, f in keys))
    return dict(zip(keys, values, strict=True))


def _match_ids(rows: list[_Row], filters: dict[tuple[str, str, RowFilter], list[Any] | None]
               ) -> None:
    for row in rows:
        ch = row.change
        for target in row.targets:
            ids: list[int] = []
            for b in target.bindings:
                if b.filter is not None and ch.type != "DELETE":
                    canonical = filters.get((ch.schema, ch.table, b.filter))
                    if canonical is None or not b.filter.matches(row.record or {}, canonical):
                        continue
                if b.id not in ids:
                    ids.append(b.id)
            target.ids = ids


async def _check_access(oracle: RowOracle, rows: list[_Row]) -> _AccessMap:
    """Per (identity, table): the Access answer and row-index -> position of its pk key."""
    groups: dict[tuple[Identity, str, str], list[_Row]] = defaultdict(list)
    for row in rows:
        for target in row.targets:
            identity = target.identity
            if target.ids and not identity.bypasses_rls:
                key = (identity, row.change.schema, row.change.table)
                if not groups[key] or groups[key][-1] is not row:
                    groups[key].append(row)
    limiter = asyncio.Semaphore(_ACCESS_CONCURRENCY)

    async def one(key: tuple[Identity, str, str], group: list[_Row]
                  ) -> tuple[Access, dict[int, int]]:
        identity, schema, table = key
        checked = [r for r in group if r.change.type != "DELETE" and r.change.pk]
        positions = {id(r): n for n, r in enumerate(checked)}
        pk = checked[0].change.pk if checked else ()
        keys = [{c.name: c.as_text() for c in r.change.columns if c.name in pk}
                for r in checked]
        async with limiter:
            access = await oracle.access(identity, schema, table, pk, keys)
        return access, positions

    items = list(groups.items())
    answers = await asyncio.gather(*(one(k, g) for k, g in items))
    return {k: a for (k, _), a in zip(items, answers, strict=True)}


def _data_json(row: _Row, columns: frozenset[str] | None) -> str:
    ch = row.change
    data: dict[str, Any] = {
        "schema": ch.schema,
        "table": ch.table,
        "commit_timestamp": ch.commit_timestamp,
        "type": ch.type,
        "errors": None,
        "columns": [c for c in row.columns if columns is None or c["name"] in columns],
    }
    if row.record is not None:
        data["record"] = {k: v for k, v in row.record.items()
                          if columns is None or k in columns}
    if row.old_record is not None:
        data["old_record"] = {k: v for k, v in row.old_record.items()
                              if columns is None or k in columns}
    return json.dumps(data, separators=(",", ":"), default=str)


def _visible_columns(row: _Row, target: _Target, access: _AccessMap) -> frozenset[str] | None:
    """None: everything (RLS bypassed); _DENIED: nothing; else the selectable columns."""
    if target.identity.bypasses_rls:
        return None
    ch = row.change
    answer = access.get((target.identity, ch.schema, ch.table))
    if answer is None:
        return _DENIED
    granted, positions = answer
    if not granted.columns:
        return _DENIED
    if ch.type != "DELETE" and positions.get(id(row)) not in granted.visible:
        return _DENIED
    return granted.columns


def _collect(
    changes: Sequence[Change], subscribers: Sequence[tuple[Connection, Channel]]
) -> list[_Row]:
    rows: list[_Row] = []
    for change in changes:
        targets = []
        for conn, channel in subscribers:
            watching = [b for b in channel.bindings
                        if b.watches(change.schema, change.table, change.type)]
            if watching:
                targets.append(_Target(conn, channel, channel.identity, watching))
        if targets:
            rows.append(_Row(change, targets))
    return rows


async def dispatch(
    oracle: RowOracle, changes: Sequence[Change], subscribers: Sequence[tuple[Connection, Channel]]
) -> int:
    """Deliver ``changes`` to ``subscribers``; returns the number of frames queued."""
    rows = _collect(changes, subscribers)
    if not rows:
        return 0
    await _type_rows(oracle, rows)
    _match_ids(rows, await _filter_values(oracle, rows))
    access = await _check_access(oracle, rows)

    sent = 0
    for row in rows:
        encoded: dict[frozenset[str] | None, str] = {}
        for target in row.targets:
            if not target.ids or not target.conn.current(target.channel):
                continue
            columns = _visible_columns(row, target, access)
            if columns is _DENIED:
                continue
            if columns not in encoded:
                encoded[columns] = _data_json(row, columns)
            payload = f'{{"ids":{json.dumps(target.ids)},"data":{encoded[columns]}}}'
            frame = protocol.encode_raw(
                target.conn.vsn, target.channel.topic, "postgres_changes", payload
            )
            if target.conn.push(frame):
                sent += 1
    return sent
