"""Sessions: access tokens (GoTrue's claims) and rotating refresh tokens in
``auth.refresh_tokens``.

A session is the family of refresh tokens sharing a ``session_id``; it is alive while one of
them is unrevoked. Refreshing revokes the presented token and issues its successor; presenting
a revoked token again is treated as reuse: the whole family is revoked and the request fails
with ``refresh_token_already_used`` (GoTrue without a reuse interval).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from devstack.auth import errors
from devstack.auth.users import user_json
from devstack.keys import KeyRing

ACCESS_TOKEN_TTL = 3600
SUPPORTED_ALGS = ("HS256", "ES256")


@dataclass(frozen=True)
class TokenSigner:
    keys: KeyRing
    issuer: str  # <public_url>/auth/v1
    alg: Callable[[], str]  # read per token: the stack's jwt_alg switch applies at once

    def access_token(
        self, user: dict[str, Any], session_id: uuid.UUID, auth_time: int
    ) -> tuple[str, int]:
        now = int(time.time())
        exp = now + ACCESS_TOKEN_TTL
        claims = {
            "iss": self.issuer,
            "sub": str(user["id"]),
            "aud": user["aud"] or "authenticated",
            "exp": exp,
            "iat": now,
            "email": user["email"] or "",
            "phone": "",
            "app_metadata": user["raw_app_meta_data"] or {},
            "user_metadata": user["raw_user_meta_data"] or {},
            "role": user["role"] or "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": auth_time}],
            "session_id": str(session_id),
            "is_anonymous": bool(user["is_anonymous"]),
        }
        return self.keys.sign(claims, self.alg()), exp

    def session_json(
        self,
        user: dict[str, Any],
        session_id: uuid.UUID,
        refresh_token: str,
        auth_time: int,
    ) -> dict[str, Any]:
        token, exp = self.access_token(user, session_id, auth_time)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_TTL,
            "expires_at": exp,
            "refresh_token": refresh_token,
            "user": user_json(user),
        }


def _new_token() -> str:
    return secrets.token_urlsafe(24)


async def start(conn: AsyncConnection[Any], user_id: uuid.UUID) -> tuple[uuid.UUID, str]:
    """Open a session for the user: (session_id, first refresh token)."""
    session_id = uuid.uuid4()
    token = _new_token()
    await conn.execute(
        "insert into auth.refresh_tokens (token, user_id, session_id) values (%s, %s, %s)",
        (token, user_id, session_id),
    )
    return session_id, token


@dataclass(frozen=True)
class Rotation:
    user_id: uuid.UUID
    session_id: uuid.UUID
    token: str
    auth_time: int


async def rotate(conn: AsyncConnection[Any], presented: str) -> Rotation | errors.AuthError:
    """Swap a refresh token for its successor.

    Returns the error instead of raising it so the caller commits the revocation that reuse
    detection performs.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "select id, user_id, session_id, revoked from auth.refresh_tokens"
            " where token = %s for update",
            (presented,),
        )
        row = await cur.fetchone()
        if row is None:
            return errors.AuthError(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        if row["revoked"]:
            await cur.execute(
                "update auth.refresh_tokens set revoked = true where session_id = %s",
                (row["session_id"],),
            )
            return errors.AuthError(
                400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"
            )
        await cur.execute(
            "update auth.refresh_tokens set revoked = true where id = %s", (row["id"],)
        )
        token = _new_token()
        await cur.execute(
            "insert into auth.refresh_tokens (token, user_id, session_id) values (%s, %s, %s)"
            " returning (select extract(epoch from min(created_at))::bigint"
            " from auth.refresh_tokens where session_id = %s) as auth_time",
            (token, row["user_id"], row["session_id"], row["session_id"]),
        )
        started = await cur.fetchone()
    auth_time = int(started["auth_time"]) if started and started["auth_time"] else int(time.time())
    return Rotation(row["user_id"], row["session_id"], token, auth_time)


async def alive(conn: AsyncConnection[Any], session_id: str) -> bool:
    try:
        uuid.UUID(session_id)
    except ValueError:
        return False
    cur = await conn.execute(
        "select 1 from auth.refresh_tokens where session_id = %s and not revoked limit 1",
        (session_id,),
    )
    return await cur.fetchone() is not None


async def revoke(
    conn: AsyncConnection[Any], user_id: str, session_id: str | None, scope: str
) -> None:
    """``scope``: global (every session of the user), local (this one), others (all but it)."""
    if scope == "local" and session_id:
        await conn.execute(
            "update auth.refresh_tokens set revoked = true where session_id = %s", (session_id,)
        )
    elif scope == "others" and session_id:
        await conn.execute(
            "update auth.refresh_tokens set revoked = true where user_id = %s and session_id <> %s",
            (user_id, session_id),
        )
    else:
        await conn.execute(
            "update auth.refresh_tokens set revoked = true where user_id = %s", (user_id,)
        )
