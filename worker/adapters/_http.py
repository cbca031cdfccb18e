"""The HTTP status of Supabase's answers, which supabase-py's exceptions drop.

When PostgREST is unreachable or slow, hosted Supabase's gateway (Kong) answers 502, 503 or
504 with a JSON body that has no ``code`` (also 429 under rate limits, 414 past about 8 KB
of URL, 401 for an unknown API key). postgrest-py turns any JSON error body into
``APIError(code=None)`` and keeps no status, so the exception alone cannot tell a passing
upstream failure from a permanent refusal.

Every supabase-py client of the product is built by ``worker.wiring.supabase_client`` with
the ``httpx.Client`` made here (``ClientOptions(httpx_client=...)``), whose event hooks
record the status of the last answer in the calling thread (the sync clients send and
raise in the caller's thread). ``worker.adapters._errors.translate`` reads it when a call
fails; ``classify`` says what a status means.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx

# What a status means for the caller, whatever the body says.
RETRYABLE = frozenset({429, 502, 503, 504})  # the gateway or the service passing through
REFUSED = frozenset({401, 403})  # the key: a configuration error
URI_TOO_LONG = 414  # a request we should never have built: a bug

_local = threading.local()


@dataclass(frozen=True)
class Answer:
    """The last HTTP answer this thread received from Supabase."""

    status: int
    method: str
    path: str  # without the query string (ids, filters)


def _on_request(request: httpx.Request) -> None:
    _local.answer = None  # a transport error leaves no answer behind


def _on_response(response: httpx.Response) -> None:
    request = response.request
    _local.answer = Answer(response.status_code, request.method, request.url.path)


def last_answer() -> Answer | None:
    """The answer to this thread's last request (None: none, or it failed in transport)."""
    answer = getattr(_local, "answer", None)
    return answer if isinstance(answer, Answer) else None


def forget() -> None:
    """Clear this thread's record (before a call whose failure will be classified)."""
    _local.answer = None


def http_client(timeout: float, *, write_timeout: float | None = None) -> httpx.Client:
    """The httpx client every supabase-py client of the product is given: the timeouts
    supabase-py would have set (``write_timeout`` for Storage uploads) and the hooks."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, write=max(timeout, write_timeout or timeout)),
        follow_redirects=True,
        event_hooks={"request": [_on_request], "response": [_on_response]},
    )
