"""The operator commands' logic: `picture-worker status|retry|requeue|enqueue|cancel`.

Everything goes through Supabase's API with the service key (supabase-py): the monitoring
views (``queue_summary``, ``queue_health``, ``active_workers``, ``failed_jobs_recent``,
``stuck_jobs``) and the RPCs (``retry_jobs``, ``requeue_stale_jobs``, ``enqueue_job``,
``cancel_generation``). No SQL is built here. The commands need only ``SUPABASE_URL`` and
``SUPABASE_SERVICE_ROLE_KEY`` (``OpsSettings``), not the daemon's Replicate token.

Failures are ``OpsError``s carrying the exit code the CLI returns: ``EXIT_FAILED`` (1) when
the operation failed or found nothing, ``EXIT_USAGE`` (2) for usage and configuration
errors (including a key Supabase rejects).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod
from supabase import Client

from worker.adapters import _http
from worker.jobs import enqueue_params
from worker.settings import JOB_TYPES, SupabaseSettings
from worker.statuses import GENERATION_TERMINAL, JobStatus
from worker.wiring import service_client

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

RECENT_FAILURES = 10
# Keys without which a job of that type fails at once (the handlers' `required(...)`).
REQUIRED_PAYLOAD_KEYS: Mapping[str, tuple[str, ...]] = {
    "generate-image": ("generation_id",),
    "download-image": ("generation_id", "output_url"),
    "process-webhook": ("body",),
    "cleanup-storage": (),
}

_AUTH_CODES = ("PGRST300", "PGRST301", "PGRST302", "42501")
_MISSING_CODES = ("PGRST202", "PGRST205", "42883", "42P01")


class OpsError(Exception):
    """An operator command failed; ``exit_code`` is what the CLI returns."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# The operator commands need the project connection only, not the daemon's Replicate token.
OpsSettings = SupabaseSettings


def connect(settings: OpsSettings, timeout: float = 30.0) -> Operations:
    return Operations(service_client(settings, timeout=timeout), settings.supabase_url)


# -- input checks (usage errors, exit 2) ------
def parse_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise OpsError(f"{what} must be a UUID, got {value!r}", EXIT_USAGE) from None


def check_job_type(job_type: str) -> str:
    if job_type not in JOB_TYPES:
        raise OpsError(f"unknown job type {job_type!r}; known: {', '.join(JOB_TYPES)}", EXIT_USAGE)
    return job_type


def parse_payload(job_type: str, text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise OpsError(f"PAYLOAD_JSON is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(payload, dict):
        raise OpsError("PAYLOAD_JSON must be a JSON object ({...})", EXIT_USAGE)
    missing = [k for k in REQUIRED_PAYLOAD_KEYS.get(job_type, ()) if payload.get(k) in (None, "")]
    if missing:
        raise OpsError(
            f"a {job_type} payload needs {', '.join(missing)} "
            "(see 'enqueue' in docs/operations.md)",
            EXIT_USAGE,
        )
    return payload


# -- results ------
@dataclass
class StatusReport:
    summary: dict[str, Any]
    by_type: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    recent_failures: list[dict[str, Any]]
    stuck_jobs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "by_type": self.by_type,
            "workers": self.workers,
            "recent_failures": self.recent_failures,
            "stuck_jobs": self.stuck_jobs,
        }


@dataclass
class CancelResult:
    generation_id: str
    previous_status: str
    generation: dict[str, Any]
    jobs_cancelled: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "generation_id": self.generation_id,
            "previous_status": self.previous_status,
            "status": self.generation.get("status"),
            "jobs_cancelled": self.jobs_cancelled,
        }


def _rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [cast(dict[str, Any], r) for r in data if isinstance(r, dict)]
    if isinstance(data, dict):
        return [cast(dict[str, Any], data)]
    return []


def _as_int(data: Any) -> int:
    if isinstance(data, bool):
        return int(data)
    if isinstance(data, int):
        return data
    if isinstance(data, str) and data.strip().lstrip("-").isdigit():
        return int(data)
    raise OpsError(f"unexpected answer from Supabase: {data!r}")


class Operations:
    """The operator commands over one service-role supabase-py client."""

    def __init__(self, client: Client, url: str = "") -> None:
        self._client = client
        self._url = url

    # -- plumbing ------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request; library failures become one-line ``OpsError``s."""
        _http.forget()
        try:
            return fn()
        except APIError as exc:
            raise self._api_error(what, exc) from None
        except httpx.TimeoutException:
            raise OpsError(f"{what}: Supabase at {self._url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise OpsError(
                f"{what}: cannot reach Supabase at {self._url} ({type(exc).__name__}: {exc})"
            ) from None

    @staticmethod
    def _api_error(what: str, exc: APIError) -> OpsError:
        code = str(exc.code or "")
        message = str(exc.message or exc.details or "error")
        answer = _http.last_answer()  # the gateway's bodies carry no code: its status tells
        status = answer.status if answer is not None else None
        if status in _http.RETRYABLE:
            return OpsError(
                f"{what}: Supabase is unavailable right now (HTTP {status}: {message}); "
                "try again in a moment"
            )
        if code in _AUTH_CODES or status in _http.REFUSED:
            return OpsError(
                f"{what}: Supabase refused the request ({message}); "
                "SUPABASE_SERVICE_ROLE_KEY must be the project's service_role (secret) key",
                EXIT_USAGE,
            )
        if code in _MISSING_CODES:
            return OpsError(
                f"{what}: {message}; apply the migrations "
                "(`supabase db push` or `picture-worker migrate`)"
            )
        if code in ("P0002", "PT404"):  # not found (cancel_generation answers PT404)
            return OpsError(message)
        return OpsError(f"{what} failed: {message} (code {code or 'unknown'})")

    def _select(self, relation: str, build: Callable[[Any], Any] = lambda q: q) -> list[Any]:
        def run() -> Any:
            return build(self._client.table(relation).select("*")).execute().data

        return _rows(self._call(f"read {relation}", run))

    def _rpc(self, name: str, params: Mapping[str, Any]) -> Any:
        return self._call(name, lambda: self._client.rpc(name, dict(params)).execute().data)

    # -- status ------
    def status(self, failures: int = RECENT_FAILURES) -> StatusReport:
        summary = self._select("queue_summary")
        by_type = self._select("queue_health", lambda q: q.order("job_type").order("status"))
        workers = self._select("active_workers", lambda q: q.order("started_at"))
        recent = self._select(
            "failed_jobs_recent", lambda q: q.order("completed_at", desc=True).limit(failures)
        )

        def count_stuck() -> Any:
            query = self._client.table("stuck_jobs").select("id", count=CountMethod.exact).limit(1)
            return query.execute().count

        stuck = self._call("read stuck_jobs", count_stuck)
        return StatusReport(
            summary=summary[0] if summary else {},
            by_type=by_type,
            workers=workers,
            recent_failures=recent,
            stuck_jobs=int(stuck or 0),
        )

    # -- retry ------
    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._select("job_queue", lambda q: q.eq("id", job_id).limit(1))
        return rows[0] if rows else None

    def retry_job(self, job_id: str, *, include_cancelled: bool = False) -> int:
        job = self.job(job_id)
        if job is None:
            raise OpsError(f"job {job_id} not found")
        status = job.get("status")
        retryable = status == JobStatus.FAILED or (
            include_cancelled and status == JobStatus.CANCELLED
        )
        if not retryable:
            hint = " (add --cancelled to retry it)" if status == JobStatus.CANCELLED else ""
            raise OpsError(f"job {job_id} is {status}: only failed jobs can be retried{hint}")
        count = _as_int(
            self._rpc("retry_jobs", {"p_job_id": job_id, "p_include_cancelled": include_cancelled})
        )
        if count == 0:
            raise OpsError(
                f"job {job_id} was not requeued: another live job holds its dedupe key "
                f"{job.get('dedupe_key')!r}, or it changed meanwhile"
            )
        return count

    def retry_failed(
        self, job_type: str | None, limit: int, *, include_cancelled: bool = False
    ) -> tuple[int, int]:
        """Requeue up to ``limit`` failed (or cancelled) jobs, oldest first. Returns
        (requeued, skipped): retry_jobs skips a job whose dedupe key is live again."""
        statuses = [JobStatus.FAILED] + ([JobStatus.CANCELLED] if include_cancelled else [])

        def count_candidates() -> Any:
            query = (
                self._client.table("job_queue")
                .select("id", count=CountMethod.exact)
                .in_("status", [str(s) for s in statuses])
            )
            if job_type is not None:
                query = query.eq("job_type", job_type)
            return query.limit(1).execute().count

        candidates = min(limit, int(self._call("count failed jobs", count_candidates) or 0))
        params = {
            "p_job_type": job_type,
            "p_limit": limit,
            "p_include_cancelled": include_cancelled,
        }
        requeued = _as_int(self._rpc("retry_jobs", params))
        return requeued, max(0, candidates - requeued)

    # -- requeue, enqueue, cancel ------
    def requeue_stuck(self) -> int:
        return _as_int(self._rpc("requeue_stale_jobs", {}))

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any],
        *,
        priority: int = 0,
        max_attempts: int = 3,
        dedupe_key: str | None = None,
    ) -> str:
        params = enqueue_params(
            job_type, payload, priority=priority, max_attempts=max_attempts, dedupe_key=dedupe_key
        )
        job_id = self._rpc("enqueue_job", params)
        if not isinstance(job_id, str):
            raise OpsError(f"enqueue_job returned {job_id!r} instead of a job id")
        return job_id

    def cancel(self, generation_id: str) -> CancelResult:
        rows = self._select("image_generations", lambda q: q.eq("id", generation_id).limit(1))
        if not rows:
            raise OpsError(f"generation {generation_id} not found")
        before = str(rows[0].get("status"))
        if before in GENERATION_TERMINAL:
            raise OpsError(f"generation {generation_id} is already {before}: nothing to cancel")
        after = _rows(self._rpc("cancel_generation", {"p_generation_id": generation_id}))

        def count_cancelled() -> Any:
            query = (
                self._client.table("job_queue")
                .select("id", count=CountMethod.exact)
                .eq("payload->>generation_id", generation_id)
                .eq("status", JobStatus.CANCELLED)
                .limit(1)
            )
            return query.execute().count

        jobs = int(self._call("read job_queue", count_cancelled) or 0)
        return CancelResult(generation_id, before, after[0] if after else {}, jobs)
