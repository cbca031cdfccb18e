"""Translate supabase-py / httpx failures into the worker's exception tree."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import httpx
from postgrest.exceptions import APIError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from worker.adapters import _http
from worker.errors import (
    GenerationClosed,
    LeaseLost,
    Misconfigured,
    PermanentError,
    RetryableError,
    SchemaNotReady,
)
from worker.retry import http_backoff

log = logging.getLogger("worker.supabase")
T = TypeVar("T")

LEASE_LOST = "PW001"
GENERATION_CLOSED = "PT410"  # images refused for a cancelled, failed or deleted generation
SCHEMA_MISS = ("PGRST202", "PGRST205")  # not in PostgREST's schema cache (function, table)
SCHEMA_GRACE = 300.0  # seconds of schema-cache misses before it is a missing migration
KEY_HINT = (
    "SUPABASE_SERVICE_ROLE_KEY must be the project's service_role key "
    "(the legacy JWT or an sb_secret_ key)"
)


def _status_of(exc: APIError) -> int | None:
    """The HTTP status postgrest-py puts in ``code`` when the body was not JSON (three
    digits); a SQLSTATE has five characters, digits or not (23514, 22023, 40001)."""
    code = str(exc.code or "")
    return int(code) if len(code) == 3 and code.isdigit() else None


def _refused(what: str, status: int, message: str) -> Misconfigured:
    log.error(
        "%s: Supabase refused the worker's key (HTTP %d): %s",
        what,
        status,
        message,
        extra={"action": "supabase.refused"},
    )
    return Misconfigured(
        f"{what}: Supabase refused the request (HTTP {status}: {message}); {KEY_HINT}"
    )


def by_status(status: int | None, what: str, message: str, path: str = "") -> Exception | None:
    """What an HTTP status alone says, whatever the body (None: the body decides).

    429/502/503/504: the gateway or the service passing through, retry; 401/403: the key
    (a configuration error); 414: a request the worker should never have built (a bug,
    logged as an ERROR)."""
    if status is None:
        return None
    if status in _http.RETRYABLE:
        return RetryableError(f"{what} failed: {message} (HTTP {status})")
    if status in _http.REFUSED:
        return _refused(what, status, message)
    if status == _http.URI_TOO_LONG:
        log.error(
            "%s: Supabase answered 414 URI too long for %s: a request this long is a bug "
            "(lists must be sent in chunks)",
            what,
            path or "the request",
            extra={"action": "supabase.uri_too_long"},
        )
        return PermanentError(f"{what} failed: URI too long (HTTP 414): a worker bug")
    return None


class SchemaWaits:
    """How long each operation has met PostgREST's schema cache without what it needs.

    Right after a migration, PostgREST answers PGRST202 (function) or PGRST205 (table) until
    its schema cache reloads (hosted: on the NOTIFY a DDL sends): a passing state. Past
    ``grace`` seconds of misses (an episode ends when the misses stop for that long) it is a
    missing migration."""

    def __init__(self, grace: float = SCHEMA_GRACE) -> None:
        self.grace = grace
        self._episodes: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def miss(self, what: str) -> float:
        """Record a miss of ``what``; seconds since its episode began."""
        now = time.monotonic()
        with self._lock:
            first, last = self._episodes.get(what, (now, now))
            if now - last > self.grace:
                first = now
            self._episodes[what] = (first, now)
        return now - first


SCHEMA_WAITS = SchemaWaits()


def _schema_miss(what: str, detail: str) -> Exception:
    waited = SCHEMA_WAITS.miss(what)
    if waited >= SCHEMA_WAITS.grace:
        log.error(
            "%s for %.0fs: a migration is missing",
            detail,
            waited,
            extra={"action": "supabase.schema_missing"},
        )
        return Misconfigured(
            f"{detail} for {waited:.0f}s: apply the migrations "
            "(`supabase db push` or `picture-worker migrate`)"
        )
    return SchemaNotReady(f"{detail}; PostgREST's schema cache has not reloaded yet")


def translate(exc: BaseException, what: str) -> Exception:
    """One library exception -> one worker exception (message names the operation)."""
    if isinstance(exc, APIError):
        return _api_error(exc, what)
    if isinstance(exc, httpx.TransportError | httpx.TimeoutException):
        return RetryableError(f"{what}: cannot reach Supabase ({type(exc).__name__}: {exc})")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        by_http = by_status(status, what, f"Supabase answered {status}", exc.request.url.path)
        if by_http is not None:
            return by_http
        if status >= 500:
            return RetryableError(f"{what}: Supabase answered {status}")
        return PermanentError(f"{what}: Supabase answered {status}")
    return RetryableError(f"{what}: {type(exc).__name__}: {exc}")


def _api_error(exc: APIError, what: str) -> Exception:
    """PostgREST's error: the fence and the closed generation by SQLSTATE, then what the
    HTTP status says (the gateway's bodies have no code), then the code."""
    code = str(exc.code or "")
    if code == LEASE_LOST:
        return LeaseLost(f"{what}: {exc.message}")
    if code == GENERATION_CLOSED:
        return GenerationClosed(f"{what}: {exc.message}")
    answer = _http.last_answer()
    status = answer.status if answer is not None else _status_of(exc)
    message = str(exc.message or exc.details or "error")
    detail = f"{what} failed: {message} (code {code or 'unknown'})"
    if code in SCHEMA_MISS:
        return _schema_miss(what, detail)
    by_http = by_status(status, what, message, answer.path if answer else "")
    if by_http is not None:
        return by_http
    if code.startswith("PGRST0"):
        # PostgREST's connection group (PGRST000-003, HTTP 503/504): the database is
        # restarting or unreachable, or the pool is exhausted.
        return RetryableError(detail)
    if code.startswith("PGRST3") or code == "42501":
        return _refused(what, status or 401, message)
    if code == "42883":  # a function the SQL calls does not exist: a missing migration
        return Misconfigured(detail + " - apply the migrations")
    if code.startswith(("08", "53", "57", "40")):
        return RetryableError(detail)
    plain = not code or _status_of(exc) is not None  # not PostgREST's body: a front's
    if plain and status is not None and status >= 500:
        return RetryableError(detail)
    return PermanentError(detail)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    _http.forget()
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


class Counted(Generic[T]):
    """``fn`` that counts how many times it was sent (``call`` may retry it): more than once
    means an earlier attempt's answer was lost, and that attempt may have committed."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self.tries = 0

    def __call__(self) -> T:
        self.tries += 1
        return self._fn()


def call_fenced(what: str, fn: Callable[[], T], recorded: Callable[[], T | None]) -> T:
    """``call`` for a fenced write (complete_job): when an attempt's answer was lost (a
    transport error, a gateway 5xx after the commit) and the retry hits the fence
    (``LeaseLost``), the lost attempt may have committed. ``recorded()`` reads the row and
    returns it when it shows this very outcome; only otherwise is the lease lost."""
    attempt = Counted(fn)
    try:
        return call(what, attempt)
    except LeaseLost:
        if attempt.tries < 2:
            raise
        row = recorded()
        if row is None:
            raise
        log.info(
            "%s: the answer was lost but the row shows it committed",
            what,
            extra={"action": "supabase.answer_recovered"},
        )
        return row
