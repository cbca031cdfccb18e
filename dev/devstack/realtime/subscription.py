"""When a channel's postgres_changes subscription comes to exist, as on Supabase Realtime.

The real server answers ``phx_join`` with ``ok`` (echoing the bindings) before anything is
subscribed; the subscription is created afterwards (a row per binding in
``realtime.subscription``, for the tables of the ``supabase_realtime`` publication), and
only then does it push the ``system`` message "Subscribed to PostgreSQL". Changes committed
in between are never delivered. If a binding matches no published table, the whole
subscription is rolled back, the channel gets a ``system`` error with the server's exact
message (lib/extensions/postgres_cdc_rls/subscriptions.ex) and the server does not retry.

Here the subscription step runs ``realtime_subscribe_delay`` seconds after the join reply
(devstack.settings).
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection

from devstack.realtime.bindings import Binding
from devstack.realtime.changes import PUBLICATION

SUBSCRIBED = "Subscribed to PostgreSQL"

_PUBLISHED = """
select schemaname, tablename from pg_publication_tables where pubname = %s
"""


async def published_tables(conn: AsyncConnection[object]) -> set[tuple[str, str]]:
    cur = await conn.execute(_PUBLISHED, [PUBLICATION])
    return {(str(s), str(t)) for s, t in await cur.fetchall()}


def _matches(binding: Binding, published: set[tuple[str, str]]) -> bool:
    return any(
        (binding.schema == "*" or binding.schema == schema)
        and (binding.table is None or binding.table == table)
        for schema, table in published
    )


def _filters_text(binding: Binding) -> str:
    """The filters as the server logs them: an Elixir list of {column, op, value, negate}."""
    f = binding.filter
    if f is None:
        return "[]"
    value = "{" + ",".join(f.values) + "}" if f.op == "in" else f.values[0]
    return f'[{{"{f.column}", "{f.op}", "{value}", false}}]'


def unpublished_error(binding: Binding) -> str:
    select = binding.params.get("select")
    select_text = "nil" if not isinstance(select, list) else "[" + ", ".join(
        f'"{c}"' for c in select) + "]"
    return (
        "Unable to subscribe to changes with given parameters. Please check Realtime is "
        "enabled for the given connect parameters: "
        f"[event: {binding.event}, schema: {binding.schema}, table: {binding.table or '*'}, "
        f"filters: {_filters_text(binding)}, select: {select_text}]"
    )


def first_unpublished(
    bindings: Sequence[Binding], published: set[tuple[str, str]]
) -> Binding | None:
    """The first binding no table of the publication matches (it fails the whole join)."""
    return next((b for b in bindings if not _matches(b, published)), None)
