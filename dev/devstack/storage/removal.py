"""Deleting object rows and their bytes consistently.

Rows are deleted as the caller (RLS decides) and each file is moved to the trash inside the
same transaction; the trash is purged after the commit, or put back if anything failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from psycopg import sql

from devstack.context import StackContext
from devstack.storage.access import Caller, fetch_all, transaction
from devstack.storage.disk import ObjectStore


async def delete_objects(
    ctx: StackContext,
    store: ObjectStore,
    caller: Caller,
    bucket_id: str,
    names: list[str] | None,
) -> list[dict[str, Any]]:
    """Delete the named objects (every object of the bucket when ``names`` is None)."""
    query: sql.Composable = sql.SQL("delete from storage.objects where bucket_id = %s")
    params: list[Any] = [bucket_id]
    if names is not None:
        query += sql.SQL(" and name = any(%s)")
        params.append(names)
    query += sql.SQL(" returning *")
    moved: list[tuple[Path, Path]] = []
    try:
        async with transaction(ctx, caller) as conn:
            rows = await fetch_all(conn, query, params)
            for row in rows:
                if (pair := store.trash(bucket_id, row["name"])) is not None:
                    moved.append(pair)
    except BaseException:
        store.restore(moved)
        raise
    await anyio.to_thread.run_sync(store.purge, bucket_id, moved)
    return rows
