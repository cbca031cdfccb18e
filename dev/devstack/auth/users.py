"""``auth.users`` rows (queried on the ``admin`` pool, like GoTrue's own database role) and
their JSON shape.

Passwords are hashed by pgcrypto (``extensions.crypt(pw, extensions.gen_salt('bf'))``) and
checked with ``crypt()`` in SQL; the hash never leaves the database in a response.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devstack.auth import errors

MIN_PASSWORD_LENGTH = 6
INSTANCE_ID = uuid.UUID(int=0)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_COLUMNS = sql.SQL(
    "id, aud, role, email, email_confirmed_at, last_sign_in_at, raw_app_meta_data,"
    " raw_user_meta_data, is_anonymous, created_at, updated_at"
)
_IDENTITY_NS = uuid.UUID("8b0b5c0e-6f2b-4a53-9d55-6c0b4a1b2c3d")


def normalize_email(value: Any) -> str:
    if not isinstance(value, str):
        raise errors.invalid_email()
    email = value.strip().lower()
    if len(email) > 255 or not _EMAIL_RE.match(email):
        raise errors.invalid_email()
    return email


def check_password(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise errors.validation_failed("Signup requires a valid password")
    if len(value) < MIN_PASSWORD_LENGTH:
        raise errors.weak_password(MIN_PASSWORD_LENGTH)
    return value


def user_json(row: dict[str, Any]) -> dict[str, Any]:
    """The user as GoTrue returns it (valid for supabase-py's ``User`` and supabase-js)."""
    user_id = str(row["id"])
    confirmed = row["email_confirmed_at"]
    identity = {
        "identity_id": str(uuid.uuid5(_IDENTITY_NS, user_id)),
        "id": user_id,
        "user_id": user_id,
        "identity_data": {
            "sub": user_id,
            "email": row["email"],
            "email_verified": confirmed is not None,
            "phone_verified": False,
        },
        "provider": "email",
        "last_sign_in_at": row["last_sign_in_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "email": row["email"],
    }
    return {
        "id": user_id,
        "aud": row["aud"] or "authenticated",
        "role": row["role"] or "authenticated",
        "email": row["email"],
        "email_confirmed_at": confirmed,
        "phone": "",
        "confirmed_at": confirmed,
        "last_sign_in_at": row["last_sign_in_at"],
        "app_metadata": row["raw_app_meta_data"] or {},
        "user_metadata": row["raw_user_meta_data"] or {},
        "identities": [identity] if row["email"] else [],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "is_anonymous": bool(row["is_anonymous"]),
    }


async def _one(
    conn: AsyncConnection[Any], query: sql.SQL | sql.Composed, params: Any
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def create(
    conn: AsyncConnection[Any],
    *,
    email: str,
    password: str | None,
    confirmed: bool,
    user_metadata: dict[str, Any],
    app_metadata: dict[str, Any],
    signed_in: bool,
) -> dict[str, Any]:
    """Insert a user; raises :class:`psycopg.errors.UniqueViolation` if the email is taken."""
    app_meta = {"provider": "email", "providers": ["email"], **app_metadata}
    query = sql.SQL(
        "insert into auth.users (instance_id, id, aud, role, email, encrypted_password,"
        " email_confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data)"
        " values (%(instance)s, %(id)s, 'authenticated', 'authenticated', %(email)s,"
        " case when %(password)s::text is null then null"
        " else extensions.crypt(%(password)s, extensions.gen_salt('bf')) end,"
        " case when %(confirmed)s then now() end, case when %(signed_in)s then now() end,"
        " %(app)s, %(user)s) returning {}"
    ).format(_COLUMNS)
    params = {
        "instance": INSTANCE_ID,
        "id": uuid.uuid4(),
        "email": email,
        "password": password,
        "confirmed": confirmed,
        "signed_in": signed_in and confirmed,
        "app": Jsonb(app_meta),
        "user": Jsonb(user_metadata),
    }
    row = await _one(conn, query, params)
    assert row is not None
    return row


async def get(conn: AsyncConnection[Any], user_id: uuid.UUID | str) -> dict[str, Any] | None:
    query = sql.SQL("select {} from auth.users where id = %s").format(_COLUMNS)
    return await _one(conn, query, (str(user_id),))


async def password_sign_in(conn: AsyncConnection[Any], email: str, password: str) -> dict[str, Any]:
    """Check the password with ``crypt()``; on success record the sign-in and return the user."""
    query = sql.SQL(
        "select id, email_confirmed_at is not null as confirmed from auth.users"
        " where email = %s and encrypted_password is not null"
        " and encrypted_password = extensions.crypt(%s, encrypted_password)"
    )
    found = await _one(conn, query, (email, password))
    if found is None:
        raise errors.invalid_credentials()
    if not found["confirmed"]:
        raise errors.AuthError(400, "email_not_confirmed", "Email not confirmed")
    update = sql.SQL(
        "update auth.users set last_sign_in_at = now(), updated_at = now() where id = %s"
        " returning {}"
    ).format(_COLUMNS)
    row = await _one(conn, update, (found["id"],))
    assert row is not None
    return row


async def update(
    conn: AsyncConnection[Any], user_id: uuid.UUID | str, changes: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply validated changes: email, password, user_metadata (merged), app_metadata (merged),
    email_confirm."""
    sets: list[sql.Composable] = [sql.SQL("updated_at = now()")]
    params: list[Any] = []
    if "email" in changes:
        sets.append(sql.SQL("email = %s"))
        params.append(changes["email"])
    if "password" in changes:
        sets.append(sql.SQL("encrypted_password = extensions.crypt(%s, extensions.gen_salt('bf'))"))
        params.append(changes["password"])
    if "user_metadata" in changes:
        sets.append(sql.SQL("raw_user_meta_data = coalesce(raw_user_meta_data, '{}') || %s"))
        params.append(Jsonb(changes["user_metadata"]))
    if "app_metadata" in changes:
        sets.append(sql.SQL("raw_app_meta_data = coalesce(raw_app_meta_data, '{}') || %s"))
        params.append(Jsonb(changes["app_metadata"]))
    if "email_confirm" in changes:
        sets.append(
            sql.SQL(
                "email_confirmed_at = case when %s then coalesce(email_confirmed_at, now()) end"
            )
        )
        params.append(bool(changes["email_confirm"]))
    query = sql.SQL("update auth.users set {} where id = %s returning {}").format(
        sql.SQL(", ").join(sets), _COLUMNS
    )
    try:
        return await _one(conn, query, [*params, str(user_id)])
    except psycopg.errors.UniqueViolation as exc:
        raise errors.email_exists() from exc


async def delete(conn: AsyncConnection[Any], user_id: uuid.UUID | str) -> bool:
    cur = await conn.execute("delete from auth.users where id = %s", (str(user_id),))
    return cur.rowcount > 0


async def list_page(conn: AsyncConnection[Any], page: int, per_page: int) -> list[dict[str, Any]]:
    query = sql.SQL("select {} from auth.users order by created_at, id limit %s offset %s").format(
        _COLUMNS
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, (per_page, (page - 1) * per_page))
        return await cur.fetchall()
