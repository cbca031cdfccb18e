"""GoTrue's admin API for server code (``service_role`` Bearer): create, list, get, update and
delete users."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.auth import errors, users
from devstack.auth.errors import json_response
from devstack.auth.identity import require_admin
from devstack.auth.public import read_json
from devstack.context import StackContext


def _user_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["user_id"])
    except ValueError as exc:
        raise errors.validation_failed("user_id must be an UUID") from exc


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.validation_failed(f"{name} must be an object")
    return value


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if body.get("email") is not None:
        changes["email"] = users.normalize_email(body["email"])
    if body.get("password") is not None:
        changes["password"] = users.check_password(body["password"])
    metadata = body.get("user_metadata", body.get("data"))
    if metadata is not None:
        changes["user_metadata"] = _object(metadata, "user_metadata")
    if body.get("app_metadata") is not None:
        changes["app_metadata"] = _object(body["app_metadata"], "app_metadata")
    if body.get("email_confirm") is not None:
        changes["email_confirm"] = bool(body["email_confirm"])
    return changes


class AdminApi:
    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    async def create_user(self, request: Request) -> Response:
        require_admin(self.ctx.keyring, request)
        changes = _changes(await read_json(request))
        if "email" not in changes:
            raise errors.validation_failed("Unable to validate email address: invalid format")
        try:
            async with self.ctx.admin.connection() as conn, conn.transaction():
                user = await users.create(
                    conn,
                    email=changes["email"],
                    password=changes.get("password"),
                    confirmed=changes.get("email_confirm", False),
                    user_metadata=changes.get("user_metadata", {}),
                    app_metadata=changes.get("app_metadata", {}),
                    signed_in=False,
                )
        except psycopg.errors.UniqueViolation as exc:
            raise errors.email_exists() from exc
        return json_response(users.user_json(user))

    async def list_users(self, request: Request) -> Response:
        require_admin(self.ctx.keyring, request)
        try:
            page = max(1, int(request.query_params.get("page") or 1))
            per_page = min(1000, max(1, int(request.query_params.get("per_page") or 50)))
        except ValueError as exc:
            raise errors.validation_failed("page and per_page must be integers") from exc
        async with self.ctx.admin.connection() as conn, conn.transaction():
            rows = await users.list_page(conn, page, per_page)
        return json_response({"users": [users.user_json(r) for r in rows], "aud": "authenticated"})

    async def get_user(self, request: Request) -> Response:
        require_admin(self.ctx.keyring, request)
        async with self.ctx.admin.connection() as conn, conn.transaction():
            user = await users.get(conn, _user_id(request))
        if user is None:
            raise errors.user_not_found()
        return json_response(users.user_json(user))

    async def update_user(self, request: Request) -> Response:
        require_admin(self.ctx.keyring, request)
        changes = _changes(await read_json(request))
        async with self.ctx.admin.connection() as conn, conn.transaction():
            user = await users.update(conn, _user_id(request), changes)
        if user is None:
            raise errors.user_not_found()
        return json_response(users.user_json(user))

    async def delete_user(self, request: Request) -> Response:
        require_admin(self.ctx.keyring, request)
        async with self.ctx.admin.connection() as conn, conn.transaction():
            deleted = await users.delete(conn, _user_id(request))
        if not deleted:
            raise errors.user_not_found()
        return json_response({})

    def routes(self) -> list[Route]:
        return [
            Route("/admin/users", self.create_user, methods=["POST"]),
            Route("/admin/users", self.list_users, methods=["GET"]),
            Route("/admin/users/{user_id}", self.get_user, methods=["GET"]),
            Route("/admin/users/{user_id}", self.update_user, methods=["PUT"]),
            Route("/admin/users/{user_id}", self.delete_user, methods=["DELETE"]),
        ]
