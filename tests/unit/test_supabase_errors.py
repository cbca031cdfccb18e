"""How Supabase's answers are classified (worker.adapters._errors), without a server:
the codes PostgREST puts in its bodies and the schema-cache grace."""

from __future__ import annotations

import time
import uuid

import pytest
from postgrest.exceptions import APIError

from worker.adapters import _http
from worker.adapters._errors import SchemaWaits, translate
from worker.errors import (
    LeaseLost,
    Misconfigured,
    PermanentError,
    RetryableError,
    SchemaNotReady,
)


@pytest.fixture(autouse=True)
def no_answer_recorded() -> None:
    _http.forget()  # what translate would read of an earlier request in this thread


def api_error(code: str | None, message: str = "boom") -> APIError:
    return APIError({"code": code, "message": message, "details": None, "hint": None})


def test_a_function_missing_from_the_schema_cache_is_not_ready_yet() -> None:
    what = f"rpc-{uuid.uuid4().hex[:6]}"  # a fresh episode
    error = translate(api_error("PGRST202", "Could not find the function"), what)
    assert isinstance(error, SchemaNotReady) and isinstance(error, RetryableError)
    assert "schema cache" in error.message
    assert isinstance(translate(api_error("PGRST205"), what), SchemaNotReady)


def test_schema_misses_become_a_missing_migration_after_the_grace() -> None:
    waits = SchemaWaits(grace=0.2)
    assert waits.miss("enqueue_job") == 0.0
    for _ in range(4):
        time.sleep(0.08)
        waited = waits.miss("enqueue_job")
    assert waited >= 0.2  # one episode: misses closer together than the grace
    assert waits.miss("other_rpc") == 0.0
    time.sleep(0.25)
    assert waits.miss("enqueue_job") == 0.0  # a pause longer than the grace: a new episode


def test_codes_without_an_http_answer() -> None:
    assert isinstance(translate(api_error("PW001"), "complete_job"), LeaseLost)
    assert isinstance(translate(api_error("PGRST301"), "claim"), Misconfigured)
    assert isinstance(translate(api_error("42501"), "claim"), Misconfigured)
    assert isinstance(translate(api_error("57014"), "claim"), RetryableError)
    assert isinstance(translate(api_error("PGRST002"), "claim"), RetryableError)
    five = translate(api_error("22023"), "catalogue_model")
    assert isinstance(five, PermanentError) and not isinstance(five, Misconfigured)
    assert isinstance(translate(api_error("502", "<html>bad gateway</html>"), "x"), RetryableError)
