"""Queue and Generations over PostgREST (supabase-py sync client, service_role).

The queue is driven only through the RPCs of supabase/migrations (claim_jobs, complete_job,
heartbeat_job, ...); generations and images through the table API.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar, cast

from postgrest.exceptions import APIError
from postgrest.types import CountMethod
from supabase import Client

from worker.adapters._errors import Counted, call, call_fenced, translated
from worker.adapters.answers import (
    chain_params,
    claimed,
    durations,
    finished,
    peers,
    registry_params,
    stored,
)
from worker.errors import InvalidInput, PermanentError, RetryableError
from worker.jobs import Job, enqueue_params, parse_ts
from worker.ports import (
    Chain,
    Claimed,
    Durations,
    Finished,
    Peer,
    PredictionDone,
    Row,
    Stored,
    WorkerInfo,
)

CATALOGUE_REFUSED = "22023"  # catalogue_model: unknown model, or not the catalogue's version
ID_CHUNK = 100  # ids per ``in.(...)`` filter: ~3.7 KB of URL, at most 100 rows an answer


C = TypeVar("C", bound=Claimed)


def _doubt(answer: C, attempt: Counted[Any], claimed_any: bool) -> C:
    """``answer``, marked in doubt when the call that may have claimed was sent twice."""
    return replace(answer, in_doubt=True) if attempt.tries > 1 and claimed_any else answer


def _rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [cast(dict[str, Any], r) for r in data if isinstance(r, dict)]
    if isinstance(data, dict):
        return [cast(dict[str, Any], data)]
    return []


class SupabaseQueue:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _rpc(self, name: str, params: Mapping[str, Any]) -> Any:
        return self._client.rpc(name, dict(params)).execute().data

    def claim(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
    ) -> list[Job]:
        # Not retried in-process: a claim whose answer is lost is recovered by the lease.
        with translated("claim_jobs"):
            data = self._rpc(
                "claim_jobs",
                {
                    "p_limit": limit,
                    "p_job_types": list(job_types),
                    "p_worker_id": worker_id,
                    "p_lease_seconds": lease_seconds,
                    "p_exclude_suspects": exclude_suspects,
                },
            )
        return [Job.from_row(r) for r in _rows(data)]

    def complete(self, job_id: str, worker_id: str, result: Mapping[str, Any] | None) -> Row:
        params = {"p_job_id": job_id, "p_result": dict(result or {}), "p_worker_id": worker_id}

        def completed() -> Any:
            row = self.read(job_id)
            return [row] if row is not None and row.get("status") == "completed" else None

        data = call_fenced("complete_job", lambda: self._rpc("complete_job", params), completed)
        rows = _rows(data)
        return rows[0] if rows else {}

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: str,
        details: Mapping[str, Any] | None,
        retryable: bool,
    ) -> Row:
        ours = dict(details or {})
        params = {
            "p_job_id": job_id,
            "p_error": error,
            "p_error_details": ours,
            "p_retryable": retryable,
            "p_worker_id": worker_id,
        }

        def failed() -> Any:  # this very failure: the details carry the worker and the time
            row = self.read(job_id)
            recorded = row.get("error_details") if row is not None else None
            if (
                ours
                and isinstance(recorded, Mapping)
                and all(recorded.get(k) == v for k, v in ours.items())
            ):
                return [row]
            return None

        data = call_fenced("complete_job", lambda: self._rpc("complete_job", params), failed)
        rows = _rows(data)
        return rows[0] if rows else {}

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: int) -> Row | None:
        params = {"p_job_id": job_id, "p_worker_id": worker_id, "p_lease_seconds": lease_seconds}
        rows = _rows(call("heartbeat_job", lambda: self._rpc("heartbeat_job", params), attempts=2))
        return rows[0] if rows else None

    def release(self, job_id: str, worker_id: str) -> bool:
        params = {"p_job_id": job_id, "p_worker_id": worker_id}
        return bool(_rows(call("release_job", lambda: self._rpc("release_job", params))))

    def release_lost(self, worker_id: str, known: Sequence[str]) -> list[str]:
        params = {"p_worker_id": worker_id, "p_known": list(known)}
        rows = _rows(call("release_lost_claims", lambda: self._rpc("release_lost_claims", params)))
        return [str(r["id"]) for r in rows]

    def read(self, job_id: str) -> Row | None:
        def run() -> Any:
            query = self._client.table("job_queue").select("*").eq("id", job_id).limit(1)
            return query.execute().data

        rows = _rows(call("read job", run))
        return rows[0] if rows else None

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
        data = call("enqueue_job", lambda: self._rpc("enqueue_job", params))
        if not isinstance(data, str):
            raise RetryableError(f"enqueue_job returned {data!r} instead of a job id")
        return data

    def requeue_stale(self) -> int:
        data = call("requeue_stale_jobs", lambda: self._rpc("requeue_stale_jobs", {}), attempts=2)
        return int(data) if isinstance(data, int | str) and str(data).isdigit() else 0

    def enqueue_webhook_checks(self, older_than_seconds: int, limit: int) -> int:
        params = {"p_older_than_seconds": older_than_seconds, "p_limit": limit}
        data = call(
            "enqueue_webhook_checks",
            lambda: self._rpc("enqueue_webhook_checks", params),
            attempts=2,
        )
        return int(data) if isinstance(data, int | str) and str(data).isdigit() else 0

    def next_scheduled_at(self, job_types: Sequence[str]) -> datetime | None:
        params = {"p_job_types": list(job_types)}
        data = call("next_scheduled_at", lambda: self._rpc("next_scheduled_at", params), attempts=2)
        return parse_ts(data) if isinstance(data, str) else None

    def register_worker(self, info: WorkerInfo) -> None:
        params = registry_params(info)
        call("register_worker", lambda: self._rpc("register_worker", params), attempts=2)

    # -- combined calls ------
    def claim_work(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
        suspect_alone: bool = False,
    ) -> Claimed:
        params = {
            "p_limit": limit,
            "p_job_types": list(job_types),
            "p_worker_id": worker_id,
            "p_lease_seconds": lease_seconds,
            "p_exclude_suspects": exclude_suspects,
            "p_suspect_alone": suspect_alone,
        }
        # Not retried in-process: a claim whose answer is lost is recovered by the lease.
        with translated("claim_work"):
            data = self._rpc("claim_work", params)
        return claimed(data, limit)

    def complete_and_claim(
        self, job_id: str, worker_id: str, result: Mapping[str, Any], chain: Chain | None
    ) -> Claimed:
        params = {
            "p_job_ids": [job_id],
            "p_worker_id": worker_id,
            "p_results": dict(result),
            **chain_params(chain, "p_claim"),
        }
        attempt = Counted(lambda: self._rpc("complete_and_claim", params))
        answer = claimed(call("complete_and_claim", attempt), chain.limit if chain else 0)
        return _doubt(answer, attempt, bool(answer.asked))

    def finish_prediction(
        self, job_id: str, worker_id: str, done: PredictionDone, chain: Chain | None
    ) -> Finished:
        params = {
            "p_job_id": job_id,
            "p_worker_id": worker_id,
            "p_generation_id": done.generation_id,
            "p_prediction_id": done.prediction_id,
            "p_generation_time": done.generation_time,
            "p_download": dict(done.download),
            "p_result": dict(done.result),
            "p_chain": chain is not None and "download-image" in chain.job_types,
            "p_lease_seconds": chain.lease_seconds if chain else 300,
        }
        attempt = Counted(lambda: self._rpc("finish_prediction", params))
        answer = finished(call("finish_prediction", attempt))
        return _doubt(answer, attempt, bool(params["p_chain"]))

    def store_image(
        self,
        job_id: str,
        worker_id: str,
        image: Mapping[str, Any],
        result: Mapping[str, Any],
        chain: Chain | None,
    ) -> Stored:
        params = {
            "p_job_id": job_id,
            "p_worker_id": worker_id,
            "p_image": dict(image),
            "p_result": dict(result),
            **chain_params(chain, "p_claim"),
        }
        attempt = Counted(lambda: self._rpc("store_image", params))
        answer = stored(call("store_image", attempt), chain.limit if chain else 0)
        return _doubt(answer, attempt, bool(answer.asked))

    def heartbeat_worker(self, info: WorkerInfo, live_seconds: int) -> list[Peer]:
        params = {
            **registry_params(info),
            "p_job_types": list(info.job_types) if info.job_types is not None else None,
            "p_live_seconds": live_seconds,
        }
        data = call("heartbeat_worker", lambda: self._rpc("heartbeat_worker", params), attempts=2)
        return peers(data)

    def prediction_stats(self, hours: int) -> dict[str, Durations]:
        params = {"p_hours": hours}
        data = call("prediction_stats", lambda: self._rpc("prediction_stats", params), attempts=2)
        return durations(data)


class SupabaseGenerations:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, generation_id: str) -> Row | None:
        def run() -> Any:
            return (
                self._client.table("image_generations")
                .select("*")
                .eq("id", generation_id)
                .limit(1)
                .execute()
                .data
            )

        try:
            rows = _rows(call("read generation", run))
        except Exception as exc:
            if isinstance(exc.__cause__, APIError) and exc.__cause__.code == "22P02":
                return None  # not a uuid: no such generation
            raise
        return rows[0] if rows else None

    def update(
        self,
        generation_id: str,
        fields: Mapping[str, object],
        *,
        unless_status: Collection[str] = (),
    ) -> Row | None:
        def run() -> Any:
            query = (
                self._client.table("image_generations").update(dict(fields)).eq("id", generation_id)
            )
            if unless_status:
                query = query.not_.in_("status", sorted(unless_status))
            return query.execute().data

        rows = _rows(call("update generation", run))
        return rows[0] if rows else None

    def find_by_prediction(self, prediction_id: str) -> Row | None:
        def run() -> Any:
            return (
                self._client.table("image_generations")
                .select("*")
                .eq("replicate_prediction_id", prediction_id)
                .limit(1)
                .execute()
                .data
            )

        rows = _rows(call("read generation by prediction", run))
        return rows[0] if rows else None

    def find_image(self, generation_id: str) -> Row | None:
        def run() -> Any:
            return (
                self._client.table("images")
                .select("*")
                .eq("generation_id", generation_id)
                .order("created_at")
                .limit(1)
                .execute()
                .data
            )

        rows = _rows(call("read image", run))
        return rows[0] if rows else None

    def insert_image(self, row: Mapping[str, Any]) -> Row:
        # Retried in-process: a retry after an insert whose answer was lost meets the unique
        # index (23505) and returns the image the lost attempt wrote.
        def run() -> Any:
            return self._client.table("images").insert(dict(row)).execute().data

        try:
            data = call("insert image", run)
        except Exception as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and cause.code == "23505":
                existing = self.find_image(str(row["generation_id"]))
                if existing is not None:
                    return existing
            raise
        rows = _rows(data)
        return rows[0] if rows else dict(row)

    def catalogue_model(self, model_id: str, model_version: str | None) -> Row:
        params = {"p_model_id": model_id, "p_model_version": model_version}
        try:
            data = call(
                "catalogue_model",
                lambda: self._client.rpc("catalogue_model", params).execute().data,
            )
        except PermanentError as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and cause.code == CATALOGUE_REFUSED:
                raise InvalidInput(
                    f"the model catalogue refused the job: {cause.message}",
                    details={"model_id": model_id, "model_version": model_version},
                ) from cause
            raise
        rows = _rows(data)
        if not rows or not rows[0].get("replicate_id"):
            raise InvalidInput(f"the model catalogue has no active model {model_id}")
        return rows[0]

    def existing_ids(self, generation_ids: Sequence[str]) -> dict[str, str]:
        """Read in chunks of ``ID_CHUNK`` ids, so a URL stays far below the gateway's 8 KB
        (an id is 37 bytes in ``in.(...)``), and page each chunk by its exact count, so an
        answer cut at ``max_rows`` (1,000 on hosted) never reads as "missing". Any read
        failing fails the whole call: nothing is concluded from part of the answer."""
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(generation_ids))
        for start in range(0, len(ids), ID_CHUNK):
            found.update(self._statuses(ids[start : start + ID_CHUNK]))
        return found

    def _statuses(self, ids: list[str]) -> dict[str, str]:
        rows: list[dict[str, Any]] = []
        while True:

            def run(offset: int = len(rows)) -> Any:
                return (
                    self._client.table("image_generations")
                    .select("id,status", count=CountMethod.exact)
                    .in_("id", ids)
                    .order("id")
                    .range(offset, offset + len(ids) - 1)
                    .execute()
                )

            response = call("read generations", run)
            page = _rows(response.data)
            rows.extend(page)
            total = response.count
            if total is None:
                raise PermanentError("read generations: the answer carries no count")
            if len(rows) >= total or not page:
                break
        if len(rows) < (total or 0):
            raise RetryableError(f"read generations: {len(rows)} of {total} rows answered")
        return {str(r["id"]): str(r["status"]) for r in rows}
