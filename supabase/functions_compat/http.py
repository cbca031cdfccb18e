"""Request and response helpers shared by the endpoints.

Every failure an endpoint means to report is an ``HttpError``; ``guarded`` turns it into the
JSON body the clients read (``{"error": "..."}``: supabase-py's ``FunctionsHttpError``
takes its message from ``body["error"]``), and anything unexpected into a logged 500 that
carries no detail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("functions_compat")

MAX_BODY_BYTES = 256 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """A failure reported to the client as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def json_response(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def guarded(endpoint: Endpoint, *, failure_fields: dict[str, Any] | None = None) -> Endpoint:
    """POST only; ``HttpError`` -> its JSON body; any other exception -> logged 500.

    ``failure_fields`` are added to every error body (process-generation answers
    ``{"success": false, "error": ...}``).
    """
    fields = dict(failure_fields or {})

    async def run(request: Request) -> Response:
        try:
            if request.method != "POST":
                raise HttpError(405, f"Method {request.method} not allowed; use POST")
            return await endpoint(request)
        except HttpError as exc:
            return JSONResponse(
                {**fields, "error": exc.message, **exc.extra}, status_code=exc.status
            )
        except Exception:
            log.exception("%s failed", request.url.path)
            return JSONResponse({**fields, "error": "Internal server error"}, status_code=500)

    return run


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HttpError(413, f"Request body too large (limit {MAX_BODY_BYTES} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, f"Request body too large (limit {MAX_BODY_BYTES} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (the Content-Type is not required, as in Deno's
    ``req.json()``); 400 for anything else."""
    raw = await read_body(request)
    if not raw.strip():
        raise HttpError(400, "Request body must be a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HttpError(400, "Invalid JSON in request body") from None
    if not isinstance(data, dict):
        raise HttpError(400, "Request body must be a JSON object")
    return data
