"""HTTP details of Replicate's API: problem+json errors, auth, faults, request headers/bodies."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from devstack.fake_replicate.config import FakeConfig
from devstack.fake_replicate.engine import Engine
from devstack.fake_replicate.predictions import WEBHOOK_EVENTS

PROBLEM = "application/problem+json"
TOKEN = re.compile(r"^r8_[A-Za-z0-9_\-]{4,}$")
PREFER = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ALLOWED_BODY = {"version", "input", "webhook", "webhook_events_filter", "stream"}


class ApiError(Exception):
    """Raised by handlers; rendered as a problem+json response."""

    def __init__(
        self,
        status: int,
        title: str | None,
        detail: str,
        *,
        invalid_fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid_fields = invalid_fields
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {}
        if self.title is not None:
            body["title"] = self.title
        body["detail"] = self.detail
        body["status"] = self.status
        if self.invalid_fields is not None:
            body["invalid_fields"] = self.invalid_fields
        return JSONResponse(body, self.status, headers=self.headers, media_type=PROBLEM)


def not_found(detail: str = "The requested resource could not be found.") -> ApiError:
    return ApiError(404, "Not found", detail)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token"):
        return None
    return token.strip() or None


def authenticate(request: Request, cfg: FakeConfig) -> str:
    """The caller's token, or a 401 like Replicate's."""
    token = bearer_token(request)
    if token is None or not (
        TOKEN.match(token) or token in cfg.extra_tokens or token in cfg.broke_tokens
    ):
        raise ApiError(401, "Unauthenticated", "You did not pass a valid authentication token")
    return token


def require_credit(token: str, cfg: FakeConfig) -> None:
    if token in cfg.broke_tokens:
        raise ApiError(
            402,
            "Insufficient credit",
            "You have insufficient credit to run this model. Go to "
            "https://replicate.com/account/billing#billing to purchase credit. Once you "
            "purchase credit, please wait a few minutes before trying to run the model again.",
        )


def inject_faults(request: Request, engine: Engine) -> None:
    """Raise the configured 429/5xx before the request is handled."""
    cfg = engine.config
    if request.method not in cfg.fault_methods:
        return
    if cfg.http_429_next > 0 or engine.rng.random() < cfg.http_429_rate:
        if cfg.http_429_next > 0:
            cfg.http_429_next -= 1
        engine.stats.injected["429"] += 1
        headers = {}
        if cfg.retry_after_seconds is not None:
            headers["retry-after"] = str(cfg.retry_after_seconds)
        raise ApiError(
            429,
            "Request was throttled.",
            "Request was throttled. Your rate limit resets in ~30s.",
            headers=headers,
        )
    if cfg.http_5xx_next > 0 or engine.rng.random() < cfg.http_5xx_rate:
        if cfg.http_5xx_next > 0:
            cfg.http_5xx_next -= 1
        engine.stats.injected[str(cfg.http_5xx_status)] += 1
        raise ApiError(
            cfg.http_5xx_status,
            "Service Unavailable",
            "The server is temporarily unable to handle the request.",
        )


def parse_prefer(value: str | None) -> float | None:
    """Seconds to hold a create request (``Prefer: wait`` = 60), or None."""
    if value is None:
        return None
    match = PREFER.match(value)
    if not match:
        raise _header_error("Prefer", "Prefer must be `wait` or `wait=n` with n from 1 to 60")
    if match.group(1) is None:
        return 60.0
    n = int(match.group(1))
    if not 1 <= n <= 99:  # the published pattern accepts 1..99; more than 60 is capped
        raise _header_error("Prefer", "Prefer must be `wait` or `wait=n` with n from 1 to 60")
    return float(min(n, 60))


def parse_cancel_after(value: str | None, minimum: float) -> float | None:
    """Seconds from ``Cancel-After`` (``30``, ``45s``, ``1m30s``, ``1h``), at least ``minimum``."""
    if value is None:
        return None
    text = value.strip().lower()
    if text.isdigit():
        seconds = float(text)
    else:
        match = DURATION.match(text)
        if not text or not match or not any(match.groups()):
            raise _header_error("Cancel-After", f"Invalid duration {value!r}")
        h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = float(h * 3600 + m * 60 + s)
    if seconds < minimum:
        raise _header_error("Cancel-After", f"Cancel-After must be at least {minimum:g} seconds")
    return seconds


def _header_error(name: str, description: str) -> ApiError:
    return ApiError(
        422,
        "Invalid request",
        f"- {name}: {description}",
        invalid_fields=[{"type": "header", "field": name, "description": description}],
    )


def check_body(body: Any, *, needs_version: bool) -> None:
    """Validate the create body like the OpenAPI request schema (additionalProperties false)."""
    errors: list[dict[str, str]] = []
    if not isinstance(body, dict):
        errors.append(
            {
                "type": "type",
                "field": "(root)",
                "description": f"Invalid type. Expected: object, given: {type(body).__name__}",
            }
        )
    else:
        allowed = _ALLOWED_BODY if needs_version else _ALLOWED_BODY - {"version"}
        for key in body:
            if key not in allowed:
                errors.append(
                    {
                        "type": "additional_property_not_allowed",
                        "field": "(root)",
                        "description": f"Additional property {key} is not allowed",
                    }
                )
        required = ["version", "input"] if needs_version else ["input"]
        for key in required:
            if key not in body:
                errors.append(
                    {"type": "required", "field": "(root)", "description": f"{key} is required"}
                )
        errors.extend(_check_webhook_fields(body))
        if needs_version and "version" in body and not isinstance(body["version"], str):
            errors.append(
                {
                    "type": "type",
                    "field": "version",
                    "description": "Invalid type. Expected: string",
                }
            )
    if errors:
        raise ApiError(
            422,
            "Invalid request",
            "\n".join(f"- {e['field']}: {e['description']}" for e in errors),
            invalid_fields=errors,
        )


def _check_webhook_fields(body: dict[str, Any]) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    hook = body.get("webhook")
    if hook is not None and (not isinstance(hook, str) or not re.match(r"^https?://[^\s/]+", hook)):
        errors.append(
            {"type": "format", "field": "webhook", "description": "Does not match format 'uri'"}
        )
    events = body.get("webhook_events_filter")
    if events is not None:
        if not isinstance(events, list):
            errors.append(
                {
                    "type": "type",
                    "field": "webhook_events_filter",
                    "description": "Invalid type. Expected: array",
                }
            )
        else:
            for n, ev in enumerate(events):
                if ev not in WEBHOOK_EVENTS:
                    allowed = ", ".join(f'"{e}"' for e in WEBHOOK_EVENTS)
                    errors.append(
                        {
                            "type": "enum",
                            "field": f"webhook_events_filter.{n}",
                            "description": f"webhook_events_filter.{n} must be one of the "
                            f"following: {allowed}",
                        }
                    )
    return errors
