"""GoTrue's error format and codes.

Bodies are ``{"code", "message", "msg"}`` (plus ``error_code`` for older clients), sent with
``X-Supabase-Api-Version: 2024-01-01`` so both supabase-js and supabase-py read ``code``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("devstack.auth")

API_VERSION_HEADER = "x-supabase-api-version"
API_VERSION = "2024-01-01"


class AuthError(Exception):
    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}

    def response(self) -> Response:
        body = {
            "code": self.code,
            "error_code": self.code,
            "message": self.message,
            "msg": self.message,
            **self.extra,
        }
        return json_response(body, self.status)


async def handle_auth_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return exc.response()


async def handle_database_unavailable(request: Request, exc: Exception) -> Response:
    """Connection failures and pool exhaustion: a retryable 503 for both clients."""
    logger.warning("auth %s %s: database unavailable: %s", request.method, request.url.path, exc)
    return AuthError(503, "unexpected_failure", "Database unavailable, try again").response()


async def handle_unexpected(_request: Request, _exc: Exception) -> Response:
    """GoTrue's 500 body (the exception itself is logged by the server)."""
    return AuthError(500, "unexpected_failure", "Unexpected failure, please try again").response()


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_response(data: Any, status_code: int = 200) -> Response:
    body = json.dumps(data, default=_default, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


class ApiVersionHeader:
    """Adds ``X-Supabase-Api-Version`` to every response, as GoTrue does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((API_VERSION_HEADER.encode(), API_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


# -- GoTrue's errors -------------------------------------------------------------------------
def invalid_credentials() -> AuthError:
    return AuthError(400, "invalid_credentials", "Invalid login credentials")


def validation_failed(message: str) -> AuthError:
    return AuthError(400, "validation_failed", message)


def invalid_email() -> AuthError:
    return validation_failed("Unable to validate email address: invalid format")


def weak_password(min_length: int) -> AuthError:
    message = f"Password should be at least {min_length} characters."
    return AuthError(
        422,
        "weak_password",
        message,
        {"weak_password": {"reasons": ["length"], "message": message}},
    )


def user_already_exists() -> AuthError:
    return AuthError(422, "user_already_exists", "User already registered")


def email_exists() -> AuthError:
    return AuthError(
        422, "email_exists", "A user with this email address has already been registered"
    )


def no_authorization() -> AuthError:
    return AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")


def bad_jwt(detail: str) -> AuthError:
    return AuthError(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {detail}")


def not_admin() -> AuthError:
    return AuthError(403, "not_admin", "User not allowed")


def user_not_found(message: str = "User not found") -> AuthError:
    return AuthError(404, "user_not_found", message)
