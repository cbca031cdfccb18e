"""GoTrue subset, mounted at ``/auth/v1``.

    POST /signup                          email + password; auto-confirm returns a session
    POST /token?grant_type=password       sign in
    POST /token?grant_type=refresh_token  rotate a refresh token (auth.refresh_tokens)
    GET  /user, PUT /user                 the user of the Bearer access token
    POST /logout?scope=global|local|others  204, revokes refresh tokens
    GET  /settings, GET /health
    GET  /.well-known/jwks.json           the stack's ES256 public key (no API key needed)
    POST/GET /admin/users, GET/PUT/DELETE /admin/users/{id}   service_role only

Users live in ``auth.users`` (``admin`` pool, like GoTrue's own role); passwords are pgcrypto
bcrypt hashes. Access tokens carry GoTrue's claims, expire after 3600 s and are signed HS256
with the project secret, or ES256 with the stack's JWKS key (``kid`` header) when
``ctx.extras["jwt_alg"] == "ES256"`` or, if that is unset, the environment variable
``DEVSTACK_JWT_ALG=ES256`` is set for ``python -m devstack serve``. ``ctx.extras["auth_autoconfirm"]
= False`` makes signup return the bare, unconfirmed user instead of a session.

Every response carries ``X-Supabase-Api-Version: 2024-01-01``; errors are GoTrue's
``{"code", "message", "msg"}`` with its status codes.
"""

from __future__ import annotations

import os

import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware

from devstack.auth.admin import AdminApi
from devstack.auth.errors import (
    ApiVersionHeader,
    AuthError,
    handle_auth_error,
    handle_database_unavailable,
    handle_unexpected,
)
from devstack.auth.public import PublicApi
from devstack.auth.sessions import SUPPORTED_ALGS, TokenSigner
from devstack.context import StackContext

JWT_ALG_ENV = "DEVSTACK_JWT_ALG"


def signing_alg(ctx: StackContext) -> str:
    alg = str(ctx.extras.get("jwt_alg") or os.environ.get(JWT_ALG_ENV) or "HS256").upper()
    if alg not in SUPPORTED_ALGS:
        raise ValueError(f"unsupported JWT algorithm {alg!r}; use one of {SUPPORTED_ALGS}")
    return alg


def create_app(ctx: StackContext) -> Starlette:
    signer = TokenSigner(ctx.keys, f"{ctx.public_url}/auth/v1", signing_alg(ctx))
    autoconfirm = bool(ctx.extras.get("auth_autoconfirm", True))
    return Starlette(
        routes=[*PublicApi(ctx, signer, autoconfirm).routes(), *AdminApi(ctx).routes()],
        middleware=[Middleware(ApiVersionHeader)],
        exception_handlers={
            AuthError: handle_auth_error,
            psycopg.OperationalError: handle_database_unavailable,
            PoolTimeout: handle_database_unavailable,
            Exception: handle_unexpected,
        },
    )
