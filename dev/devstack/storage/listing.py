"""``POST /object/list/{bucket}`` (folders and files one level below a prefix), ``/object/move``
and ``/object/copy``."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.context import StackContext
from devstack.storage import errors
from devstack.storage.access import caller_from_request, fetch_all, fetch_one, transaction
from devstack.storage.disk import ObjectStore, validate_bucket_id, validate_key
from devstack.storage.objects import read_json
from devstack.storage.responses import json_response

_SORT_COLUMNS = {"name", "updated_at", "created_at", "last_accessed_at"}

# Like storage.search(): folders first (id and metadata null), then the files at this level.
_LIST = sql.SQL(
    "with matches as ("
    " select name, id, updated_at, created_at, last_accessed_at, metadata, path_tokens"
    " from storage.objects where bucket_id = %(bucket)s and name ilike %(pattern)s"
    "), entries as ("
    " select distinct path_tokens[%(level)s::int] as name, null::uuid as id,"
    " null::timestamptz as updated_at, null::timestamptz as created_at,"
    " null::timestamptz as last_accessed_at, null::jsonb as metadata, 0 as kind"
    " from matches where array_length(path_tokens, 1) > %(level)s::int"
    " union all"
    " select path_tokens[%(level)s::int], id, updated_at, created_at, last_accessed_at,"
    " metadata, 1 from matches where array_length(path_tokens, 1) = %(level)s::int"
    ") select name, id, updated_at, created_at, last_accessed_at, metadata from entries"
    " order by kind, {order_by} limit %(limit)s offset %(offset)s"
)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _int(value: Any, default: int, name: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.invalid_request(f"{name} must be a non-negative integer")
    return value


def _list_query(body: dict[str, Any]) -> tuple[sql.Composed, dict[str, Any]]:
    prefix = body.get("prefix") or ""
    search = body.get("search") or ""
    if not isinstance(prefix, str) or not isinstance(search, str):
        raise errors.invalid_request("prefix and search must be strings")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # the prefix is always a folder
    sort = body.get("sortBy") or {}
    column = sort.get("column", "name") if isinstance(sort, dict) else "name"
    if column not in _SORT_COLUMNS:
        raise errors.invalid_request(f"Invalid sortBy column {column!r}")
    desc = isinstance(sort, dict) and str(sort.get("order", "asc")).lower() == "desc"
    order = sql.SQL("desc" if desc else "asc")
    by_name = sql.SQL('name collate "C" {}').format(order)
    order_by = (
        by_name
        if column == "name"
        else sql.SQL("{} {} nulls last, {}").format(sql.Identifier(column), order, by_name)
    )
    params = {
        "bucket": None,
        "pattern": _like_escape(prefix) + _like_escape(search) + "%",
        "level": len(prefix.split("/")),
        "limit": _int(body.get("limit"), 100, "limit"),
        "offset": _int(body.get("offset"), 0, "offset"),
    }
    return _LIST.format(order_by=order_by), params


def _transfer_body(body: Any) -> tuple[str, str, str, str]:
    if not isinstance(body, dict):
        raise errors.invalid_request("Body must be a JSON object")
    try:
        bucket = validate_bucket_id(str(body["bucketId"]))
        source = validate_key(str(body["sourceKey"]))
        dest = validate_key(str(body["destinationKey"]))
    except KeyError as exc:
        raise errors.invalid_request(f"body must have required property '{exc.args[0]}'") from exc
    dest_bucket = validate_bucket_id(str(body.get("destinationBucket") or bucket))
    return bucket, source, dest_bucket, dest


_COPY = (
    "insert into storage.objects (id, bucket_id, name, owner, owner_id, metadata, user_metadata,"
    " version) select %(id)s, %(dbucket)s, %(dest)s, %(owner)s, %(owner_id)s, metadata,"
    " user_metadata, %(version)s from storage.objects where bucket_id = %(bucket)s"
    " and name = %(src)s"
)
_COPY_UPSERT = (
    _COPY + " on conflict (bucket_id, name) do update set metadata = excluded.metadata,"
    " user_metadata = excluded.user_metadata, version = excluded.version,"
    " owner = excluded.owner, owner_id = excluded.owner_id, updated_at = now() returning id"
)


class ListingApi:
    def __init__(self, ctx: StackContext, store: ObjectStore) -> None:
        self.ctx = ctx
        self.store = store

    async def list_objects(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket = validate_bucket_id(request.path_params["bucket"])
        body = await read_json(request)
        query, params = _list_query(body if isinstance(body, dict) else {})
        params["bucket"] = bucket
        async with transaction(self.ctx, caller) as conn:
            rows = await fetch_all(conn, query, params)
        return json_response(rows)

    async def move(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket, source, dest_bucket, dest = _transfer_body(await read_json(request))
        try:
            async with transaction(self.ctx, caller) as conn:
                cur = await conn.execute(
                    "update storage.objects set bucket_id = %s, name = %s, updated_at = now(),"
                    " last_accessed_at = now() where bucket_id = %s and name = %s",
                    (dest_bucket, dest, bucket, source),
                )
                if not cur.rowcount:
                    raise errors.no_such_key()
                try:
                    self.store.move((bucket, source), (dest_bucket, dest))
                except FileNotFoundError as exc:
                    raise errors.no_such_key() from exc
        except psycopg.errors.UniqueViolation as exc:
            raise errors.key_already_exists() from exc
        except psycopg.errors.ForeignKeyViolation as exc:
            raise errors.no_such_bucket() from exc
        return json_response({"message": "Successfully moved"})

    async def copy(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket, source, dest_bucket, dest = _transfer_body(await read_json(request))
        upsert = request.headers.get("x-upsert", "").lower() == "true"
        try:
            spool = await anyio.to_thread.run_sync(self.store.copy_into_spool, bucket, source)
        except FileNotFoundError as exc:
            raise errors.no_such_key() from exc
        params = {
            "id": uuid.uuid4(),
            "dbucket": dest_bucket,
            "dest": dest,
            "bucket": bucket,
            "src": source,
            "owner": caller.owner_uuid,
            "owner_id": caller.owner_id,
            "version": str(uuid.uuid4()),
        }
        object_id: Any = params["id"]
        try:
            async with transaction(self.ctx, caller) as conn:
                if upsert:
                    row = await fetch_one(conn, _COPY_UPSERT, params)
                    object_id = row["id"] if row else None
                else:
                    copied = (await conn.execute(_COPY, params)).rowcount
                    object_id = params["id"] if copied else None
                if object_id is None:
                    raise errors.no_such_key()
                self.store.commit(spool, dest_bucket, dest)
        except psycopg.errors.UniqueViolation as exc:
            raise errors.key_already_exists() from exc
        except psycopg.errors.ForeignKeyViolation as exc:
            raise errors.no_such_bucket() from exc
        finally:
            spool.discard()
        return json_response({"Key": f"{dest_bucket}/{dest}", "Id": object_id})

    def routes(self) -> list[Route]:
        return [
            Route("/object/list/{bucket}", self.list_objects, methods=["POST"]),
            Route("/object/move", self.move, methods=["POST"]),
            Route("/object/copy", self.copy, methods=["POST"]),
        ]
