"""The Protocols the core (daemon, runner, handlers) depends on.

Adapters in ``worker.adapters`` implement them over supabase-py; the provider layer in
``worker.replicate`` and ``worker.net`` implements the model and fetch ports. Only
``worker.cli`` wires concrete classes together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from worker.jobs import Job

Row = Mapping[str, Any]


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    hostname: str
    version: str
    mode: str
    concurrency: int
    in_flight: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    realtime_connected: bool | None = None
    stopped: bool = False


class Queue(Protocol):
    def claim(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
    ) -> list[Job]: ...

    def complete(self, job_id: str, worker_id: str, result: Mapping[str, Any] | None) -> Row: ...

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: str,
        details: Mapping[str, Any] | None,
        retryable: bool,
    ) -> Row: ...

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: int) -> Row | None: ...

    def release(self, job_id: str, worker_id: str) -> bool: ...

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any],
        *,
        priority: int = 0,
        max_attempts: int = 3,
        dedupe_key: str | None = None,
    ) -> str: ...

    def requeue_stale(self) -> int: ...

    def enqueue_webhook_checks(self, older_than_seconds: int, limit: int) -> int: ...

    def next_scheduled_at(self, job_types: Sequence[str]) -> datetime | None: ...

    def register_worker(self, info: WorkerInfo) -> None: ...


class Generations(Protocol):
    def get(self, generation_id: str) -> Row | None: ...

    def update(
        self, generation_id: str, fields: Mapping[str, Any], *, unless_status: Sequence[str] = ()
    ) -> Row | None: ...

    def find_by_prediction(self, prediction_id: str) -> Row | None: ...

    def find_image(self, generation_id: str) -> Row | None: ...

    def insert_image(self, row: Mapping[str, Any]) -> Row: ...

    def existing_ids(self, generation_ids: Sequence[str]) -> dict[str, str]:
        """generation id -> status, for the ids that exist."""
        ...


class ImageStore(Protocol):
    def upload(self, path: str, data: bytes, content_type: str) -> None: ...

    def public_url(self, path: str) -> str: ...

    def remove(self, paths: Sequence[str]) -> None: ...

    def list_paths(self, limit: int) -> list[str]: ...


class Prediction(Protocol):
    id: str
    status: str
    error: Any
    raw: Mapping[str, Any]

    @property
    def output_urls(self) -> list[str]: ...

    @property
    def terminal(self) -> bool: ...


class ImageModel(Protocol):
    def create_prediction(
        self,
        model_id: str,
        version: str | None,
        input: Mapping[str, Any],
        *,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        cancel_after: int | None = None,
        wait: bool = True,
    ) -> Any: ...

    def get_prediction(self, prediction_id: str) -> Any: ...

    def cancel_prediction(self, prediction_id: str) -> Any: ...

    def wait_for(
        self,
        prediction: Any,
        deadline: float,
        poll_interval: float = ...,
        should_stop: Callable[[], bool] = ...,
    ) -> Any: ...


class Fetched(Protocol):
    data: bytes
    content_type: str
    format: str


class Fetcher(Protocol):
    def fetch(self, url: str, *, expect: set[str] | None = None) -> Any: ...
