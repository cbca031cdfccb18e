"""GoTrue subset, mounted at ``/auth/v1``.

    POST /signup                          email + password; auto-confirm returns a session
    POST /token?grant_type=password       sign in
    POST /token?grant_type=refresh_token  rotate a refresh token (auth.refresh_tokens)
    GET  /user, PUT /user                 the user of the Bearer access token
    POST /logout?scope=global|local|others  204, revokes refresh tokens
    GET  /settings, GET /health
    GET  /.well-known/jwks.json           the signing keys' public halves (no API key needed)
    POST/GET /admin/users, GET/PUT/DELETE /admin/users/{id}   service_role only

Users live in ``auth.users`` (``admin`` pool, like GoTrue's own role); passwords are pgcrypto
bcrypt hashes. Access tokens carry GoTrue's claims, expire after 3600 s and are signed, as
on hosted projects with asymmetric keys, ES256 with the current key of the JWKS (``kid``
header); the ``jwt_alg`` switch (``DEVSTACK_JWT_ALG=HS256``, or ``ctx.extras["jwt_alg"]``)
signs them HS256 with the legacy secret instead. Signing keys rotate with
``POST /_stack/keys/rotate`` (devstack.admin). ``ctx.extras["auth_autoconfirm"] = False``
makes signup return the bare, unconfirmed user instead of a session.

Every response carries ``X-Supabase-Api-Version: 2024-01-01``; errors are GoTrue's
``{"code", "message", "msg"}`` with its status codes.
"""

from __future__ import annotations

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

JWT_ALG_ENV = "DEVSTACK_JWT_ALG"  # read by devstack.settings


def signing_alg(ctx: StackContext) -> str:
    alg = str(ctx.extras.get("jwt_alg") or ctx.settings.jwt_alg).upper()
    if alg not in SUPPORTED_ALGS:
        raise ValueError(f"unsupported JWT algorithm {alg!r}; use one of {SUPPORTED_ALGS}")
    return alg


def create_app(ctx: StackContext) -> Starlette:
    signing_alg(ctx)  # refuse a bad configuration now rather than at the first sign-in
    signer = TokenSigner(ctx.keyring, f"{ctx.public_url}/auth/v1", lambda: signing_alg(ctx))
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
