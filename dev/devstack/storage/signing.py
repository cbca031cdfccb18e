"""Signed download URLs: ``POST /object/sign/{bucket}/{path}`` (one), ``POST
/object/sign/{bucket}`` (many) and ``GET /object/sign/{bucket}/{path}?token=``.

The token is an HS256 JWT over ``{"url": "<bucket>/<path>", "iat", "exp"}`` signed with the
project secret, as storage-api does. The returned ``signedURL`` is relative to
``/storage/v1`` and carries the raw (unencoded) path: supabase-js applies ``encodeURI`` to it.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.context import StackContext
from devstack.storage import errors
from devstack.storage.access import SERVICE, caller_from_request, fetch_all, transaction
from devstack.storage.disk import ObjectStore, validate_bucket_id
from devstack.storage.objects import find_object, read_json, target
from devstack.storage.responses import json_response, serve_object


def _expires_in(body: Any) -> int:
    raw = body.get("expiresIn") if isinstance(body, dict) else None
    try:
        seconds = int(str(raw))  # storage3 sends it as a string, supabase-js as a number
    except ValueError as exc:
        raise errors.invalid_request("body must have required property 'expiresIn'") from exc
    if seconds < 1:
        raise errors.invalid_request("expiresIn must be at least 1")
    return seconds


class SigningApi:
    def __init__(self, ctx: StackContext, store: ObjectStore) -> None:
        self.ctx = ctx
        self.store = store

    def sign(self, bucket: str, name: str, seconds: int) -> str:
        now = int(time.time())
        claims = {"url": f"{bucket}/{name}", "iat": now, "exp": now + seconds}
        token = jwt.encode(claims, self.ctx.keys.jwt_secret, algorithm="HS256")
        return f"/object/sign/{bucket}/{name}?token={token}"

    async def sign_one(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket, name = target(request)
        seconds = _expires_in(await read_json(request))
        await find_object(self.ctx, caller, bucket, name)  # must exist and be visible to the caller
        return json_response({"signedURL": self.sign(bucket, name, seconds)})

    async def sign_many(self, request: Request) -> Response:
        caller = caller_from_request(self.ctx, request)
        bucket = validate_bucket_id(request.path_params["bucket"])
        body = await read_json(request)
        seconds = _expires_in(body)
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise errors.invalid_request("body must have required property 'paths'")
        async with transaction(self.ctx, caller) as conn:
            rows = await fetch_all(
                conn,
                "select name from storage.objects where bucket_id = %s and name = any(%s)",
                (bucket, paths),
            )
        visible = {r["name"] for r in rows}
        result = [
            {"path": p, "signedURL": self.sign(bucket, p, seconds), "error": None}
            if p in visible
            else {
                "path": p,
                "signedURL": None,
                "error": "Either the object does not exist or you do not have access to it",
            }
            for p in paths
        ]
        return json_response(result)

    async def download_signed(self, request: Request) -> Response:
        bucket, name = target(request)
        token = request.query_params.get("token")
        if not token:
            raise errors.invalid_request("querystring must have required property 'token'")
        try:
            claims = jwt.decode(token, self.ctx.keys.jwt_secret, algorithms=["HS256"])
        except jwt.ExpiredSignatureError as exc:
            raise errors.StorageError(
                400, "ExpiredToken", "The provided token has expired."
            ) from exc
        except jwt.PyJWTError as exc:
            raise errors.invalid_jwt(str(exc)) from exc
        if claims.get("url") != f"{bucket}/{name}":
            raise errors.invalid_signature()
        row = await find_object(self.ctx, SERVICE, bucket, name)
        return await serve_object(request, self.store.object_path(bucket, name), name, row)

    def routes(self) -> list[Route]:
        both = ["GET", "HEAD"]
        return [
            Route("/object/sign/{bucket}/{path:path}", self.download_signed, methods=both),
            Route("/object/sign/{bucket}/{path:path}", self.sign_one, methods=["POST"]),
            Route("/object/sign/{bucket}", self.sign_many, methods=["POST"]),
        ]
