"""Who is calling, and database transactions that run as that caller.

Like the real storage server, every metadata query runs on the ``api`` pool (as
``authenticator``) after ``set_config('role', ...)`` and ``request.jwt.claims``, so the RLS
policies on ``storage.objects``/``storage.buckets`` decide for user tokens, and
``service_role`` bypasses RLS. Lookups the real server does "as superuser" (the bucket of an
upload, public downloads, signed URLs) use :data:`SERVICE`.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from starlette.requests import Request

from devstack.context import StackContext
from devstack.keys import InvalidToken
from devstack.storage import errors

API_ROLES = frozenset({"anon", "authenticated", "service_role"})


@dataclass(frozen=True)
class Caller:
    claims: Mapping[str, Any]

    @property
    def role(self) -> str:
        return str(self.claims.get("role") or "anon")

    @property
    def owner_id(self) -> str | None:
        sub = self.claims.get("sub")
        return str(sub) if sub else None

    @property
    def owner_uuid(self) -> uuid.UUID | None:
        """The deprecated ``owner`` uuid column: the sub when it is a uuid."""
        if self.owner_id is None:
            return None
        try:
            return uuid.UUID(self.owner_id)
        except ValueError:
            return None


SERVICE = Caller({"role": "service_role"})


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def caller_from_request(ctx: StackContext, request: Request) -> Caller:
    """The verified caller: the Bearer JWT, else the ``apikey`` header."""
    token = bearer_token(request) or request.headers.get("apikey")
    if not token:
        raise errors.access_denied("Missing authorization header")
    try:
        claims = ctx.keyring.verify(token)
    except InvalidToken as exc:
        raise errors.invalid_jwt("jwt expired" if exc.code == "PGRST303" else exc.message) from exc
    role = claims.get("role")
    if role not in API_ROLES:
        raise errors.access_denied(f'role "{role}" is not allowed')
    return Caller(claims)


@contextlib.asynccontextmanager
async def transaction(ctx: StackContext, caller: Caller) -> AsyncIterator[AsyncConnection[Any]]:
    """A transaction on the api pool with the caller's role and JWT claims set locally.

    Permission errors raised by Postgres (RLS or grants) become storage's 403 Unauthorized.
    """
    try:
        async with ctx.api.connection() as conn, conn.transaction():
            await conn.execute(
                "select set_config('role', %s, true),"
                " set_config('request.jwt.claims', %s, true),"
                " set_config('request.jwt.claim.sub', %s, true),"
                " set_config('request.jwt.claim.role', %s, true)",
                (caller.role, json.dumps(dict(caller.claims)), caller.owner_id or "", caller.role),
            )
            yield conn
    except psycopg.errors.InsufficientPrivilege as exc:
        if "row-level security" in str(exc):
            raise errors.rls_denied() from exc
        raise errors.access_denied(str(exc).splitlines()[0]) from exc


async def fetch_one(
    conn: AsyncConnection[Any], query: Any, params: Sequence[Any] | Mapping[str, Any] = ()
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def fetch_all(
    conn: AsyncConnection[Any], query: Any, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
