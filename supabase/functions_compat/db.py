"""The functions' access to the project.

- ``ServiceDb``: one client with one fixed identity (service_role, built by
  ``worker.wiring``) shared by all requests, which supabase-py supports (WIRE.md 7.3); every
  call runs in Starlette's thread pool so the event loop (which, in the local stack, also
  serves /rest/v1) is never blocked. Generations and images are read through the worker's
  generations port (over the same client); the catalogue and ``create_generation`` are the
  functions' own.
- ``UserDb``: postgrest-py's async client with the caller's own JWT, so the database
  applies that user's role and rules (``request_generation`` decides the user from the
  token, never from the body).

PostgREST errors are mapped to ``HttpError``s the endpoints can answer with: the database's
own messages for bad input (22023, P0001) and the limit (PT429), nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from postgrest import AsyncPostgrestClient
from postgrest.constants import DEFAULT_POSTGREST_CLIENT_HEADERS
from postgrest.exceptions import APIError
from starlette.concurrency import run_in_threadpool
from supabase import Client

from functions_compat.http import HttpError
from worker.errors import WorkerError
from worker.ports import Generations

log = logging.getLogger("functions_compat.db")

T = TypeVar("T")
Row = dict[str, Any]

# SQLSTATEs of the generation RPCs (PostgREST answers PTxyz with HTTP xyz).
TOO_MANY = "PT429"
CONFLICT = "PT409"
NOT_FOUND = "P0002"
FOREIGN_KEY = "23503"
USER_GONE = "PT401"
BAD_INPUT = ("22023", "P0001")  # the rules' refusals: their messages are meant for the client
NOT_ALLOWED = "42501"


def _first(data: Any) -> Row | None:
    if isinstance(data, list):
        return cast(Row, data[0]) if data and isinstance(data[0], dict) else None
    return cast(Row, data) if isinstance(data, dict) else None


class ServiceDb:
    def __init__(self, client: Client, generations: Generations) -> None:
        self._client = client
        self._generations = generations

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await run_in_threadpool(fn)
        except HttpError:
            raise
        except APIError as exc:
            raise _api_error(what, exc) from exc
        except WorkerError as exc:
            log.warning("%s failed: %s", what, exc.message)
            raise HttpError(500, "Internal server error") from exc
        except Exception as exc:
            log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
            raise HttpError(500, "Internal server error") from exc

    async def active_model(self, replicate_id: str) -> Row | None:
        def run() -> Any:
            return (
                self._client.table("models")
                .select("*")
                .eq("replicate_id", replicate_id)
                .eq("is_active", True)
                .limit(1)
                .execute()
                .data
            )

        return _first(await self._call("read model", run))

    async def create_generation(
        self, user_id: str, generation: Mapping[str, Any], payload: Mapping[str, Any]
    ) -> Row:
        """Start a legacy client's pending row (the limit is the database's own)."""
        params = {
            "p_user_id": user_id,
            "p_generation": dict(generation),
            "p_payload": dict(payload),
        }

        def run() -> Any:
            return self._client.rpc("create_generation", params).execute().data

        row = _first(await self._call("create_generation", run))
        if row is None or not row.get("generation_id") or not row.get("job_id"):
            log.error("create_generation returned %r", row)
            raise HttpError(500, "Internal server error")
        return row

    async def generation(self, generation_id: str) -> Row | None:
        row = await self._call("read generation", lambda: self._generations.get(generation_id))
        return None if row is None else dict(row)

    async def image_for(self, generation_id: str) -> Row | None:
        row = await self._call("read image", lambda: self._generations.find_image(generation_id))
        return None if row is None else dict(row)


class UserDb:
    """The project's REST API as the signed-in caller (their JWT, the project's public key)."""

    def __init__(self, supabase_url: str, api_key: str) -> None:
        self._rest_url = f"{supabase_url}/rest/v1"
        self._api_key = api_key

    async def request_generation(self, token: str, request: Mapping[str, Any]) -> Row:
        """``public.request_generation`` as the user: {"generation_id", "job_id"}."""
        headers = {
            **DEFAULT_POSTGREST_CLIENT_HEADERS,
            "apikey": self._api_key,
            "Authorization": f"Bearer {token}",
        }
        try:
            async with AsyncPostgrestClient(self._rest_url, headers=headers) as client:
                params: dict[str, Any] = {"p_request": dict(request)}
                builder = client.rpc("request_generation", params)
                data = (await builder.execute()).data
        except APIError as exc:
            raise _api_error("request_generation", exc) from exc
        except Exception as exc:
            log.warning("request_generation failed: %s: %s", type(exc).__name__, exc)
            raise HttpError(500, "Internal server error") from exc
        row = _first(data)
        if row is None or not row.get("generation_id") or not row.get("job_id"):
            log.error("request_generation returned %r", data)
            raise HttpError(500, "Internal server error")
        return row


def _api_error(what: str, exc: APIError) -> HttpError:
    code = str(exc.code or "")
    message = str(exc.message or "")
    if code == TOO_MANY:
        return HttpError(429, message or "Too many generations in progress")
    if code in BAD_INPUT:
        return HttpError(400, message or "Invalid request")
    if code in (NOT_FOUND, CONFLICT):
        return HttpError(400, message or "Generation not found")
    if code in (FOREIGN_KEY, USER_GONE):
        return HttpError(401, "User not found")
    if code == NOT_ALLOWED or code.startswith("PGRST3"):
        return HttpError(401, "A signed-in user's valid access token is required")
    log.warning("%s failed: %s (code %s)", what, message, code or "?")
    return HttpError(500, "Internal server error")
