"""The user-facing GoTrue endpoints: signup, token (password, refresh_token), user, logout,
settings, health and the JWKS."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.auth import errors, sessions, users
from devstack.auth.errors import json_response
from devstack.auth.identity import current_user, require_api_key
from devstack.auth.sessions import TokenSigner
from devstack.context import StackContext


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise errors.AuthError(400, "bad_json", "Could not parse request body as JSON") from exc
    if not isinstance(body, dict):
        raise errors.AuthError(400, "bad_json", "Request body must be a JSON object")
    return body


def _metadata(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.validation_failed(f"{name} must be an object")
    return value


class PublicApi:
    def __init__(self, ctx: StackContext, signer: TokenSigner, autoconfirm: bool) -> None:
        self.ctx = ctx
        self.signer = signer
        self.autoconfirm = autoconfirm

    async def signup(self, request: Request) -> Response:
        require_api_key(self.ctx.keyring, request)
        body = await read_json(request)
        email = users.normalize_email(body.get("email"))
        password = users.check_password(body.get("password"))
        data = _metadata(body.get("data"), "data")
        try:
            async with self.ctx.admin.connection() as conn, conn.transaction():
                user = await users.create(
                    conn,
                    email=email,
                    password=password,
                    confirmed=self.autoconfirm,
                    user_metadata=data,
                    app_metadata={},
                    signed_in=True,
                )
                if not self.autoconfirm:  # confirmation pending: the bare user, no session
                    return json_response(users.user_json(user))
                session_id, refresh = await sessions.start(conn, user["id"])
        except psycopg.errors.UniqueViolation as exc:
            raise errors.user_already_exists() from exc
        return json_response(self.signer.session_json(user, session_id, refresh, int(time.time())))

    async def token(self, request: Request) -> Response:
        require_api_key(self.ctx.keyring, request)
        grant = request.query_params.get("grant_type")
        body = await read_json(request)
        if grant == "password":
            return await self._password_grant(body)
        if grant == "refresh_token":
            return await self._refresh_grant(body)
        raise errors.AuthError(
            400, "unsupported_grant_type", f"unsupported_grant_type: {grant or '(none)'}"
        )

    async def _password_grant(self, body: dict[str, Any]) -> Response:
        password = body.get("password")
        if not isinstance(password, str) or not password or not body.get("email"):
            raise errors.invalid_credentials()
        email = users.normalize_email(body.get("email"))
        async with self.ctx.admin.connection() as conn, conn.transaction():
            user = await users.password_sign_in(conn, email, password)
            session_id, refresh = await sessions.start(conn, user["id"])
        return json_response(self.signer.session_json(user, session_id, refresh, int(time.time())))

    async def _refresh_grant(self, body: dict[str, Any]) -> Response:
        presented = body.get("refresh_token")
        if not isinstance(presented, str) or not presented:
            raise errors.validation_failed("refresh_token required")
        async with self.ctx.admin.connection() as conn, conn.transaction():
            outcome = await sessions.rotate(conn, presented)
            user = None
            if isinstance(outcome, sessions.Rotation):
                user = await users.get(conn, outcome.user_id)
        if isinstance(outcome, errors.AuthError):  # committed: reuse revoked the family
            raise outcome
        if user is None:
            raise errors.AuthError(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        return json_response(
            self.signer.session_json(user, outcome.session_id, outcome.token, outcome.auth_time)
        )

    async def get_user(self, request: Request) -> Response:
        require_api_key(self.ctx.keyring, request)
        user, _claims = await current_user(self.ctx, request)
        return json_response(users.user_json(user))

    async def update_user(self, request: Request) -> Response:
        require_api_key(self.ctx.keyring, request)
        user, _claims = await current_user(self.ctx, request)
        body = await read_json(request)
        changes: dict[str, Any] = {}
        if body.get("email") is not None:
            changes["email"] = users.normalize_email(body["email"])
        if body.get("password") is not None:
            changes["password"] = users.check_password(body["password"])
        if body.get("data") is not None:
            changes["user_metadata"] = _metadata(body["data"], "data")
        async with self.ctx.admin.connection() as conn, conn.transaction():
            updated = await users.update(conn, user["id"], changes)
        if updated is None:
            raise errors.user_not_found()
        return json_response(users.user_json(updated))

    async def logout(self, request: Request) -> Response:
        require_api_key(self.ctx.keyring, request)
        user, claims = await current_user(self.ctx, request)
        scope = request.query_params.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise errors.validation_failed(f"Unsupported logout scope {scope!r}")
        session_id = claims.get("session_id")
        async with self.ctx.admin.connection() as conn, conn.transaction():
            await sessions.revoke(
                conn, str(user["id"]), str(session_id) if session_id else None, scope
            )
        return Response(status_code=204)

    async def settings(self, request: Request) -> Response:
        require_api_key(self.ctx.keyring, request)
        return json_response(
            {
                "external": {"email": True, "phone": False, "anonymous_users": False},
                "disable_signup": False,
                "mailer_autoconfirm": self.autoconfirm,
                "phone_autoconfirm": False,
                "sms_provider": "",
                "saml_enabled": False,
            }
        )

    async def health(self, _request: Request) -> Response:
        return json_response(
            {"version": "devstack", "name": "GoTrue", "description": "local GoTrue subset"}
        )

    async def jwks(self, _request: Request) -> Response:
        # Open like Supabase's: JWT verifiers (PyJWKClient, jose) fetch it without headers.
        return json_response(self.ctx.keyring.jwks())

    def routes(self) -> list[Route]:
        return [
            Route("/signup", self.signup, methods=["POST"]),
            Route("/token", self.token, methods=["POST"]),
            Route("/user", self.get_user, methods=["GET"]),
            Route("/user", self.update_user, methods=["PUT"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/settings", self.settings, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
        ]
