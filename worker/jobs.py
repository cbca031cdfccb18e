"""The Job value object, built from a ``job_queue`` row returned by the claim RPCs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.statuses import JobStatus

GENERATE_IMAGE = "generate-image"
DOWNLOAD_IMAGE = "download-image"
PROCESS_WEBHOOK = "process-webhook"
CLEANUP_STORAGE = "cleanup-storage"


def parse_ts(value: Any) -> datetime | None:
    """PostgREST timestamps ("2026-01-01T00:00:00.123456+00:00") as aware datetimes."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Job:
    id: str
    job_type: str
    payload: Mapping[str, Any]
    attempt_number: int
    max_attempts: int
    status: str = JobStatus.PROCESSING
    priority: int = 0
    created_at: datetime | None = None
    scheduled_at: datetime | None = None
    locked_by: str | None = None
    suspect: bool = False  # its last worker died holding it: run it alone
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        payload = row.get("payload") or {}
        return cls(
            id=str(row["id"]),
            job_type=str(row["job_type"]),
            payload=payload if isinstance(payload, Mapping) else {},
            attempt_number=int(row.get("attempt_number") or 0),
            max_attempts=int(row.get("max_attempts") or 3),
            status=str(row.get("status") or JobStatus.PROCESSING),
            priority=int(row.get("priority") or 0),
            created_at=parse_ts(row.get("created_at")),
            scheduled_at=parse_ts(row.get("scheduled_at")),
            locked_by=row.get("locked_by"),
            suspect=isinstance(details := row.get("error_details"), Mapping)
            and "lease_expired_at" in details,
        )

    @property
    def generation_id(self) -> str | None:
        value = self.payload.get("generation_id")
        return str(value) if value else None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt_number >= self.max_attempts

    @property
    def due_at(self) -> datetime | None:
        """When the job became claimable: the later of created_at and scheduled_at."""
        stamps = [t for t in (self.created_at, self.scheduled_at) if t is not None]
        return max(stamps) if stamps else None

    def log_fields(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "job_type": self.job_type,
            "attempt": self.attempt_number,
            "generation_id": self.generation_id,
        }


def enqueue_params(
    job_type: str,
    payload: Mapping[str, Any],
    *,
    priority: int = 0,
    max_attempts: int = 3,
    dedupe_key: str | None = None,
) -> dict[str, Any]:
    """The named arguments of the ``enqueue_job`` RPC (the daemon and the CLI both call it)."""
    return {
        "p_job_type": job_type,
        "p_payload": dict(payload),
        "p_priority": priority,
        "p_max_attempts": max_attempts,
        "p_dedupe_key": dedupe_key,
    }
