"""Who may call: the API-key gate, user access tokens, and the admin (service_role) check."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request

from devstack.auth import errors, sessions, users
from devstack.context import StackContext
from devstack.keys import InvalidToken, KeyRing

ADMIN_ROLES = frozenset({"service_role", "supabase_admin"})


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def require_api_key(keys: KeyRing, request: Request) -> dict[str, Any]:
    """Like the API gateway in front of GoTrue: an ``apikey`` (else Bearer) that verifies."""
    key = request.headers.get("apikey") or bearer(request)
    if not key:
        raise errors.AuthError(401, "no_api_key", "No API key found in request")
    try:
        return keys.verify(key)
    except InvalidToken as exc:
        raise errors.AuthError(401, "invalid_api_key", "Invalid API key") from exc


def require_admin(keys: KeyRing, request: Request) -> None:
    token = bearer(request)
    if token is None:
        raise errors.no_authorization()
    try:
        claims = keys.verify(token)
    except InvalidToken as exc:
        raise errors.bad_jwt(exc.message) from exc
    if claims.get("role") not in ADMIN_ROLES:
        raise errors.not_admin()


async def current_user(
    ctx: StackContext, request: Request
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user row, claims) for the user access token in ``Authorization``."""
    token = bearer(request)
    if token is None:
        raise errors.no_authorization()
    try:
        claims = ctx.keyring.verify(token)
    except InvalidToken as exc:
        detail = "token is expired" if exc.code == "PGRST303" else exc.message
        raise errors.bad_jwt(detail) from exc
    try:
        user_id = uuid.UUID(str(claims.get("sub")))
    except ValueError as exc:
        raise errors.AuthError(403, "bad_jwt", "invalid claim: missing sub claim") from exc
    async with ctx.admin.connection() as conn, conn.transaction():
        user = await users.get(conn, user_id)
        if user is None:
            raise errors.AuthError(
                403, "user_not_found", "User from sub claim in JWT does not exist"
            )
        session_id = claims.get("session_id")
        if session_id and not await sessions.alive(conn, str(session_id)):
            raise errors.AuthError(
                403, "session_not_found", "Session from session_id claim in JWT does not exist"
            )
    return user, claims
