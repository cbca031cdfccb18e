"""``/object`` routes: upload (POST/PUT), download (GET/HEAD), info, delete."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.context import StackContext
from devstack.storage import errors, uploads
from devstack.storage.access import (
    SERVICE,
    Caller,
    caller_from_request,
    fetch_one,
    transaction,
)
from devstack.storage.buckets import find_bucket, global_file_size_limit
from devstack.storage.disk import ObjectStore, validate_bucket_id, validate_key
from devstack.storage.removal import delete_objects
from devstack.storage.responses import iso, json_response, object_row, serve_object

_INSERT = (
    "insert into storage.objects (id, bucket_id, name, owner, owner_id, metadata,"
    " user_metadata, version) values (%(id)s, %(bucket)s, %(name)s, %(owner)s, %(owner_id)s,"
    " %(metadata)s, %(user_metadata)s, %(version)s)"
)
# Upsert needs SELECT and UPDATE permission too (RETURNING and ON CONFLICT), like Supabase.
_UPSERT = (
    _INSERT + " on conflict (bucket_id, name) do update set owner = excluded.owner,"
    " owner_id = excluded.owner_id, metadata = excluded.metadata,"
    " user_metadata = excluded.user_metadata, version = excluded.version,"
    " updated_at = now(), last_accessed_at = now() returning id"
)
_SELECT_OBJECT = (
    "select id, name, bucket_id, version, metadata, user_metadata, created_at, updated_at,"
    " last_accessed_at from storage.objects where bucket_id = %s and name = %s"
)


def target(request: Request) -> tuple[str, str]:
    """(bucket, object name) from the route, validated; the name is percent-decoded once."""
    bucket = validate_bucket_id(request.path_params["bucket"])
    return bucket, validate_key(request.path_params["path"])


async def find_object(ctx: StackContext, caller: Caller, bucket: str, name: str) -> dict[str, Any]:
    async with transaction(ctx, caller) as conn:
        row = await fetch_one(conn, _SELECT_OBJECT, (bucket, name))
    if row is None:
        raise errors.no_such_key()
    return row


def _upsert_requested(request: Request) -> bool:
    return request.method == "PUT" or request.headers.get("x-upsert", "").lower() == "true"


async def _store_upload(
    ctx: StackContext, store: ObjectStore, caller: Caller, request: Request
) -> Response:
    bucket_id, name = target(request)
    bucket = await find_bucket(ctx, bucket_id)
    limit = global_file_size_limit(ctx)
    if bucket["file_size_limit"]:
        limit = min(limit, int(bucket["file_size_limit"]))
    incoming = await uploads.receive(request, store, limit)
    try:
        uploads.check_mime_type(bucket["allowed_mime_types"], incoming.mimetype)
        upsert = _upsert_requested(request)
        params = {
            "id": uuid.uuid4(),
            "bucket": bucket_id,
            "name": name,
            "owner": caller.owner_uuid,
            "owner_id": caller.owner_id,
            "version": str(uuid.uuid4()),
            "user_metadata": Jsonb(incoming.user_metadata) if incoming.user_metadata else None,
            "metadata": Jsonb(
                {
                    "eTag": incoming.spool.etag,
                    "size": incoming.spool.size,
                    "mimetype": incoming.mimetype,
                    "cacheControl": incoming.cache_control,
                    "lastModified": iso(dt.datetime.now(dt.UTC)),
                    "contentLength": incoming.spool.size,
                    "httpStatusCode": 200,
                }
            ),
        }
        try:
            async with transaction(ctx, caller) as conn:
                object_id = params["id"]
                if upsert:
                    row = await fetch_one(conn, _UPSERT, params)
                    assert row is not None
                    object_id = row["id"]
                else:
                    await conn.execute(_INSERT, params)
                # Publish the bytes while the row is locked: concurrent uploads of one key
                # commit in the same order as their files land.
                store.commit(incoming.spool, bucket_id, name)
        except psycopg.errors.UniqueViolation as exc:
            raise errors.key_already_exists() from exc
        except psycopg.errors.ForeignKeyViolation as exc:
            raise errors.no_such_bucket() from exc
    finally:
        incoming.spool.discard()
    return json_response({"Key": f"{bucket_id}/{name}", "Id": object_id})


def _info_json(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("metadata") or {}
    return {
        "id": row["id"],
        "name": row["name"],
        "bucket_id": row["bucket_id"],
        "version": row["version"],
        "size": meta.get("size"),
        "content_type": meta.get("mimetype"),
        "cache_control": meta.get("cacheControl"),
        "etag": meta.get("eTag"),
        "metadata": row.get("user_metadata") or {},
        "last_modified": row["updated_at"],
        "created_at": row["created_at"],
    }


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise errors.invalid_request("Body is not valid JSON") from exc


class ObjectApi:
    def __init__(self, ctx: StackContext, store: ObjectStore) -> None:
        self.ctx = ctx
        self.store = store

    async def upload(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        return await _store_upload(self.ctx, self.store, caller, request)

    async def download(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket, name = target(request)
        row = await find_object(self.ctx, caller, bucket, name)
        return await serve_object(request, self.store.object_path(bucket, name), name, row)

    async def download_public(self, request: Request) -> Response:
        bucket_id, name = target(request)
        bucket = await find_bucket(self.ctx, bucket_id)
        if not bucket["public"]:
            raise errors.no_such_bucket()
        row = await find_object(self.ctx, SERVICE, bucket_id, name)
        return await serve_object(request, self.store.object_path(bucket_id, name), name, row)

    async def info(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket, name = target(request)
        return json_response(_info_json(await find_object(self.ctx, caller, bucket, name)))

    async def info_public(self, request: Request) -> Response:
        bucket_id, name = target(request)
        if not (await find_bucket(self.ctx, bucket_id))["public"]:
            raise errors.no_such_bucket()
        return json_response(_info_json(await find_object(self.ctx, SERVICE, bucket_id, name)))

    async def remove_many(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket = validate_bucket_id(request.path_params["bucket"])
        body = await read_json(request)
        prefixes = body.get("prefixes") if isinstance(body, dict) else None
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise errors.invalid_request("body must have required property 'prefixes'")
        if not 1 <= len(prefixes) <= 1000:
            raise errors.invalid_request("prefixes must hold between 1 and 1000 names")
        names = [p for p in prefixes if _is_valid_key(p)]
        rows = await delete_objects(self.ctx, self.store, caller, bucket, names) if names else []
        return json_response([object_row(r) for r in rows])

    async def remove_one(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket, name = target(request)
        if not await delete_objects(self.ctx, self.store, caller, bucket, [name]):
            raise errors.no_such_key()
        return json_response({"message": "Successfully deleted"})

    def routes(self) -> list[Route]:
        both = ["GET", "HEAD"]
        return [
            Route("/object/public/{bucket}/{path:path}", self.download_public, methods=both),
            Route("/object/authenticated/{bucket}/{path:path}", self.download, methods=both),
            Route("/object/info/public/{bucket}/{path:path}", self.info_public, methods=["GET"]),
            Route("/object/info/authenticated/{bucket}/{path:path}", self.info, methods=["GET"]),
            Route("/object/info/{bucket}/{path:path}", self.info, methods=["GET"]),
            Route("/object/{bucket}", self.remove_many, methods=["DELETE"]),
            Route("/object/{bucket}/{path:path}", self.upload, methods=["POST", "PUT"]),
            Route("/object/{bucket}/{path:path}", self.download, methods=both),
            Route("/object/{bucket}/{path:path}", self.remove_one, methods=["DELETE"]),
        ]


def _is_valid_key(name: str) -> bool:
    try:
        validate_key(name)
    except errors.StorageError:
        return False
    return True
