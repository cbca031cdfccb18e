"""Supabase Storage API subset, mounted at ``/storage/v1``.

Routes (storage-api's, answered the way storage3 and storage-js expect them):

    GET/POST /bucket, GET/PUT/DELETE /bucket/{id}, POST /bucket/{id}/empty
    POST/PUT /object/{bucket}/{path}              upload (multipart or raw); PUT = upsert
    GET/HEAD /object/{bucket}/{path}               download (JWT), also /object/authenticated/…
    GET/HEAD /object/public/{bucket}/{path}        download from a public bucket, no auth
    GET      /object/info[/authenticated|/public]/{bucket}/{path}
    DELETE   /object/{bucket} {"prefixes": [...]}  and DELETE /object/{bucket}/{path}
    POST     /object/list/{bucket}                 folders and files below a prefix
    POST     /object/move, /object/copy
    POST     /object/sign/{bucket}[/{path}], GET /object/sign/{bucket}/{path}?token=

Metadata lives in ``storage.objects``/``storage.buckets`` and is queried as the caller's role
(RLS decides; service_role bypasses it); bytes live under ``ctx.storage_root/<bucket>/<path>``.
Errors are storage-api's: HTTP 400 (500 for internal errors) with a JSON body carrying the
real status as the string ``statusCode`` plus ``code``, ``error`` and ``message``.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette

from devstack.context import StackContext
from devstack.storage import buckets, listing, objects, signing
from devstack.storage.disk import ObjectStore
from devstack.storage.errors import (
    StorageError,
    handle_database_unavailable,
    handle_storage_error,
    handle_unexpected,
)


def create_app(ctx: StackContext) -> Starlette:
    store = ObjectStore(ctx.storage_root)
    store.sweep()
    # Order matters: the fixed prefixes (public, sign, list, info, …) come before the
    # catch-all /object/{bucket}/{path} routes, as in storage-api.
    routes = [
        *buckets.BucketApi(ctx, store).routes(),
        *signing.SigningApi(ctx, store).routes(),
        *listing.ListingApi(ctx, store).routes(),
        *objects.ObjectApi(ctx, store).routes(),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            StorageError: handle_storage_error,
            psycopg.OperationalError: handle_database_unavailable,
            PoolTimeout: handle_database_unavailable,
            Exception: handle_unexpected,
        },
    )
