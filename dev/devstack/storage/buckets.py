"""``/bucket`` routes: create, list, get, update, empty, delete.

Bucket rows are read and written as the caller (RLS on storage.buckets decides; Supabase
projects usually have no bucket policies, so only service_role manages buckets).
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import psycopg
from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.context import StackContext
from devstack.storage import errors
from devstack.storage.access import (
    SERVICE,
    Caller,
    caller_from_request,
    fetch_all,
    fetch_one,
    transaction,
)
from devstack.storage.disk import ObjectStore, validate_bucket_id
from devstack.storage.removal import delete_objects
from devstack.storage.responses import json_response

SELECT_BUCKETS = sql.SQL(
    "select id, name, owner, owner_id, public, type, file_size_limit, allowed_mime_types,"
    " created_at, updated_at from storage.buckets "
)
_SORT_COLUMNS = {"id", "name", "created_at", "updated_at"}
_SIZE_RE = re.compile(r"^(\d+)\s*(B|KB|MB|GB)?$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}
DEFAULT_GLOBAL_LIMIT = 50 * 1024 * 1024


def global_file_size_limit(ctx: StackContext) -> int:
    return int(ctx.extras.get("storage_file_size_limit", DEFAULT_GLOBAL_LIMIT))


def bucket_json(row: dict[str, Any]) -> dict[str, Any]:
    """The bucket as storage3's ``BaseBucket`` validates it: ``owner`` is a string, never null,
    and ``file_size_limit``/``allowed_mime_types`` are always present."""
    owner = row.get("owner_id") or (str(row["owner"]) if row.get("owner") else "")
    return {
        "id": row["id"],
        "name": row["name"],
        "owner": owner,
        "public": bool(row["public"]),
        "type": row.get("type") or "STANDARD",
        "file_size_limit": row["file_size_limit"],
        "allowed_mime_types": row["allowed_mime_types"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def find_bucket(
    ctx: StackContext, bucket_id: str, caller: Caller = SERVICE
) -> dict[str, Any]:
    validate_bucket_id(bucket_id)
    async with transaction(ctx, caller) as conn:
        row = await fetch_one(conn, SELECT_BUCKETS + sql.SQL("where id = %s"), (bucket_id,))
    if row is None:
        raise errors.no_such_bucket()
    return row


def _parse_size_limit(ctx: StackContext, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise errors.invalid_request("Invalid file_size_limit")
    if isinstance(value, int):
        limit = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value.strip())):
        limit = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").upper()]
    else:
        raise errors.StorageError(
            400, "InvalidRequest", "Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B"
        )
    if limit < 0 or limit > global_file_size_limit(ctx):
        raise errors.invalid_request(
            f"file_size_limit must be between 0 and {global_file_size_limit(ctx)} bytes"
        )
    return limit or None


def _parse_mime_types(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and "/" in v for v in value):
        raise errors.invalid_request("allowed_mime_types must be a list of MIME types")
    return value or None


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise errors.invalid_request("Body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise errors.invalid_request("Body must be a JSON object")
    return body


class BucketApi:
    def __init__(self, ctx: StackContext, store: ObjectStore) -> None:
        self.ctx = ctx
        self.store = store

    async def list_buckets(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        q = request.query_params
        column = q.get("sortColumn", "name")
        if column not in _SORT_COLUMNS:
            raise errors.invalid_request(f"Invalid sortColumn {column!r}")
        order = sql.SQL("desc" if q.get("sortOrder", "asc").lower() == "desc" else "asc")
        try:
            limit = int(q["limit"]) if "limit" in q else None
            offset = int(q.get("offset", "0"))
        except ValueError as exc:
            raise errors.invalid_request("limit and offset must be integers") from exc
        query = SELECT_BUCKETS + sql.SQL(
            "where (%(search)s = '' or name ilike %(like)s)"
            " order by {col} {order} limit %(limit)s offset %(offset)s"
        ).format(col=sql.Identifier(column), order=order)
        search = q.get("search", "")
        like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params = {"search": search, "like": like, "limit": limit, "offset": offset}
        async with transaction(self.ctx, caller) as conn:
            rows = await fetch_all(conn, query, params)
        return json_response([bucket_json(r) for r in rows])

    async def get_bucket(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        row = await find_bucket(self.ctx, request.path_params["id"], caller)
        return json_response(bucket_json(row))

    async def create_bucket(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        body = await _json_body(request)
        name = body.get("name") or body.get("id")
        bucket_id = body.get("id") or name
        if not isinstance(name, str) or not isinstance(bucket_id, str):
            raise errors.invalid_request("body must have required property 'name'")
        validate_bucket_id(bucket_id)
        validate_bucket_id(name)
        if body.get("type", "STANDARD") != "STANDARD":
            raise errors.invalid_request("Only STANDARD buckets are supported")
        values = (
            bucket_id,
            name,
            caller.owner_uuid,
            caller.owner_id,
            bool(body.get("public", False)),
            _parse_size_limit(self.ctx, body.get("file_size_limit")),
            _parse_mime_types(body.get("allowed_mime_types")),
        )
        try:
            async with transaction(self.ctx, caller) as conn:
                await conn.execute(
                    "insert into storage.buckets (id, name, owner, owner_id, public,"
                    " file_size_limit, allowed_mime_types) values (%s, %s, %s, %s, %s, %s, %s)",
                    values,
                )
        except psycopg.errors.UniqueViolation as exc:
            raise errors.bucket_already_exists() from exc
        return json_response({"name": name})

    async def update_bucket(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket_id = validate_bucket_id(request.path_params["id"])
        body = await _json_body(request)
        sets: list[sql.Composable] = [sql.SQL("updated_at = now()")]
        params: list[Any] = []
        if "public" in body:
            sets.append(sql.SQL("public = %s"))
            params.append(bool(body["public"]))
        if "file_size_limit" in body:
            sets.append(sql.SQL("file_size_limit = %s"))
            params.append(_parse_size_limit(self.ctx, body["file_size_limit"]))
        if "allowed_mime_types" in body:
            sets.append(sql.SQL("allowed_mime_types = %s"))
            params.append(_parse_mime_types(body["allowed_mime_types"]))
        query = sql.SQL("update storage.buckets set {} where id = %s").format(
            sql.SQL(", ").join(sets)
        )
        async with transaction(self.ctx, caller) as conn:
            cur = await conn.execute(query, [*params, bucket_id])
            updated = cur.rowcount
        if not updated:
            raise errors.no_such_bucket()
        return json_response({"message": "Successfully updated"})

    async def empty_bucket(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket_id = validate_bucket_id(request.path_params["id"])
        await find_bucket(self.ctx, bucket_id)
        await delete_objects(self.ctx, self.store, caller, bucket_id, None)
        return json_response({"message": "Successfully emptied"})

    async def delete_bucket(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket_id = validate_bucket_id(request.path_params["id"])
        async with transaction(self.ctx, SERVICE) as conn:
            row = await fetch_one(
                conn,
                "select exists (select 1 from storage.objects where bucket_id = %s) as busy",
                (bucket_id,),
            )
        if row and row["busy"]:
            raise errors.bucket_not_empty()
        try:
            async with transaction(self.ctx, caller) as conn:
                cur = await conn.execute("delete from storage.buckets where id = %s", (bucket_id,))
                deleted = cur.rowcount
        except psycopg.errors.ForeignKeyViolation as exc:  # an object arrived meanwhile
            raise errors.bucket_not_empty() from exc
        if not deleted:
            raise errors.no_such_bucket()
        await anyio.to_thread.run_sync(self.store.remove_bucket, bucket_id)
        return json_response({"message": "Successfully deleted"})

    def routes(self) -> list[Route]:
        return [
            Route("/bucket", self.list_buckets, methods=["GET"]),
            Route("/bucket", self.create_bucket, methods=["POST"]),
            Route("/bucket/{id}/empty", self.empty_bucket, methods=["POST"]),
            Route("/bucket/{id}", self.get_bucket, methods=["GET"]),
            Route("/bucket/{id}", self.update_bucket, methods=["PUT"]),
            Route("/bucket/{id}", self.delete_bucket, methods=["DELETE"]),
        ]
