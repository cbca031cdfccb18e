"""PostgREST's error bodies and HTTP statuses.

Every error leaves the gateway as ``{"code", "details", "hint", "message"}`` with ``code``
always a string (supabase-py rejects anything else), and the status PostgREST 12 gives it
(``mapSQLtoHTTP`` in PostgREST's Error.hs for database errors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import psycopg
from starlette.responses import Response


@dataclass(eq=False)
class ApiError(Exception):
    status: int
    code: str
    message: str
    details: str | None = None
    hint: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        }

    def response(self) -> Response:
        headers = dict(self.headers)
        if self.code:
            headers.setdefault("Proxy-Status", f"PostgREST; error={self.code}")
        if self.status == 401 and "WWW-Authenticate" not in headers:
            headers["WWW-Authenticate"] = "Bearer"
        return Response(
            json.dumps(self.body()),
            status_code=self.status,
            media_type="application/json; charset=utf-8",
            headers=headers,
        )


class GatewayError(ApiError):
    """Rejected by the API gateway (Kong on Supabase) before PostgREST sees the request."""

    def body(self) -> dict[str, str | None]:
        return {"message": self.message, "hint": self.hint}


class SchemaMiss(ApiError):
    """An object the schema cache does not know (yet: it reloads on NOTIFY pgrst only)."""


def parse_error(what: str, text: str, details: str) -> ApiError:
    """PGRST100: a query parameter PostgREST's parser rejects."""
    return ApiError(400, "PGRST100", f'"failed to parse {what} ({text})"', details)


def column_not_found(relation: str, column: str) -> SchemaMiss:
    # PostgREST passes unknown columns to Postgres, which answers 42703 with this message.
    return SchemaMiss(400, "42703", f"column {relation}.{column} does not exist")


def payload_column_not_found(relation: str, column: str) -> SchemaMiss:
    return SchemaMiss(
        400, "PGRST204", f"Could not find the '{column}' column of '{relation}' in the schema cache"
    )


def singular_error(rows: int) -> ApiError:
    return ApiError(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        f"The result contains {rows} rows",
    )


def invalid_body(message: str = "Empty or invalid json") -> ApiError:
    return ApiError(400, "PGRST102", message)


_PREFIX_STATUS: tuple[tuple[str, int], ...] = (
    ("08", 503),  # connection exception
    ("09", 500),  # triggered action exception
    ("0L", 403),  # invalid grantor
    ("0P", 403),  # invalid role specification
    ("25", 500),  # invalid transaction state
    ("28", 403),  # invalid authorization specification
    ("2D", 500),  # invalid transaction termination
    ("38", 500),  # external routine exception
    ("39", 500),  # external routine invocation
    ("3B", 500),  # savepoint exception
    ("40", 500),  # transaction rollback
    ("53", 503),  # insufficient resources
    ("54", 500),  # program limit exceeded
    ("55", 500),  # object not in prerequisite state
    ("57", 500),  # operator intervention
    ("58", 500),  # system error
    ("F0", 500),  # configuration file error
    ("HV", 500),  # foreign data wrapper error
    ("P0", 500),  # PL/pgSQL error other than a plain RAISE
    ("XX", 500),  # internal error
)

_EXACT_STATUS: dict[str, int] = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "25006": 405,  # read_only_sql_transaction
    "42883": 404,  # undefined_function
    "42P01": 404,  # undefined_table
    "42P17": 500,  # infinite recursion (RLS policies)
    "53400": 500,  # configuration limit exceeded
    "57P01": 503,  # admin shutdown
    "P0001": 400,  # RAISE EXCEPTION without an errcode
}


def status_for_sqlstate(sqlstate: str, message: str, authed: bool) -> int:
    """PostgREST 12's mapping of a SQLSTATE to an HTTP status (anything unlisted is 400)."""
    if sqlstate == "42501":
        return 403 if authed else 401
    if sqlstate == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023" and message.startswith("role") and message.endswith("does not exist"):
        return 401
    if sqlstate in _EXACT_STATUS:
        return _EXACT_STATUS[sqlstate]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        status = int(sqlstate[2:])
        return status if 100 <= status <= 599 else 500
    for prefix, status in _PREFIX_STATUS:
        if sqlstate.startswith(prefix):
            return status
    return 400


def from_pg(exc: psycopg.Error, authed: bool) -> ApiError:
    """A database error as PostgREST reports it: SQLSTATE, primary message, detail, hint."""
    diag = exc.diag
    sqlstate = exc.sqlstate or diag.sqlstate
    message = diag.message_primary or str(exc).strip()
    if not sqlstate:
        # No server answer at all: the connection broke.
        return ApiError(503, "PGRST001", "Database client error. Retrying the connection.")
    status = status_for_sqlstate(sqlstate, message, authed)
    return ApiError(status, sqlstate, message, diag.message_detail, diag.message_hint)


def internal_error() -> ApiError:
    return ApiError(500, "PGRSTX00", "Internal server error")
