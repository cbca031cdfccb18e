"""Translate supabase-py / httpx failures into the worker's exception tree."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
from postgrest.exceptions import APIError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from worker.errors import GenerationClosed, LeaseLost, PermanentError, RetryableError
from worker.retry import http_backoff

T = TypeVar("T")

LEASE_LOST = "PW001"
GENERATION_CLOSED = "PT410"  # images refused for a cancelled, failed or deleted generation


def _status_of(exc: APIError) -> int | None:
    """The HTTP status postgrest-py puts in ``code`` when the body was not JSON (three
    digits); a SQLSTATE has five characters, digits or not (23514, 22023, 40001)."""
    code = str(exc.code or "")
    return int(code) if len(code) == 3 and code.isdigit() else None


def translate(exc: BaseException, what: str) -> Exception:
    """One library exception -> one worker exception (message names the operation)."""
    if isinstance(exc, APIError):
        code = str(exc.code or "")
        if code == LEASE_LOST:
            return LeaseLost(f"{what}: {exc.message}")
        if code == GENERATION_CLOSED:
            return GenerationClosed(f"{what}: {exc.message}")
        status = _status_of(exc)
        detail = f"{what} failed: {exc.message or exc.details} (code {code or 'unknown'})"
        if code.startswith("PGRST0"):
            # PostgREST's connection group (PGRST000-003, HTTP 503/504): the database is
            # restarting or unreachable, or the pool is exhausted. APIError carries no HTTP
            # status, so the code is all there is to tell this from a permanent error.
            return RetryableError(detail)
        if code.startswith("PGRST3") or code in ("42501", "42883", "PGRST202", "PGRST205"):
            # Auth or missing schema objects: configuration, not a passing failure.
            return PermanentError(detail + " - check SUPABASE_SERVICE_ROLE_KEY and migrations")
        if (status is not None and status >= 500) or code.startswith(("08", "53", "57", "40")):
            return RetryableError(detail)
        return PermanentError(detail)
    if isinstance(exc, httpx.TransportError | httpx.TimeoutException):
        return RetryableError(f"{what}: cannot reach Supabase ({type(exc).__name__}: {exc})")
    if isinstance(exc, httpx.HTTPStatusError):
        if exc.response.status_code >= 500:
            return RetryableError(f"{what}: Supabase answered {exc.response.status_code}")
        return PermanentError(f"{what}: Supabase answered {exc.response.status_code}")
    return RetryableError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except (LeaseLost, PermanentError, RetryableError):
        raise
    except Exception as exc:
        raise translate(exc, what) from exc


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RetryableError)


def _wait(state: RetryCallState) -> float:
    return http_backoff(state.attempt_number, base=0.25, cap=4.0)


def call(what: str, fn: Callable[[], T], *, attempts: int = 4, max_seconds: float = 20.0) -> T:
    """Run one Supabase call, retrying transient failures in-process (bounded)."""
    retrying = Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_attempt(attempts) | stop_after_delay(max_seconds),
        wait=_wait,
        reraise=True,
    )
    for attempt in retrying:
        with attempt, translated(what):
            return fn()
    raise AssertionError("unreachable")  # pragma: no cover
