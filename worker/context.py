"""What a handler gets: the job, the services it may use, and its stop conditions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from worker.errors import DeadlineExceeded, InvalidInput, JobCancelled, LeaseLost
from worker.jobs import Job
from worker.services import Services

log = logging.getLogger("worker.job")


class JobContext:
    """One running job. Threads cannot be killed, so stopping is cooperative:
    handlers call ``check()`` between steps and pass ``should_stop`` to long waits."""

    def __init__(self, job: Job, services: Services, worker_id: str, timeout: float) -> None:
        self.job = job
        self.services = services
        self.worker_id = worker_id
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self._cancelled = threading.Event()  # the user cancelled the generation
        self._lease_lost = threading.Event()  # the job was taken from us
        self._abandon = threading.Event()  # shutdown: stop without side effects

    # -- signals from the daemon ------
    def cancel(self) -> None:
        self._cancelled.set()

    def lose_lease(self) -> None:
        self._lease_lost.set()

    def abandon(self) -> None:
        self._abandon.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancelled.is_set()

    @property
    def abandoned(self) -> bool:
        return self._abandon.is_set() or self._lease_lost.is_set()

    def should_stop(self) -> bool:
        return self._cancelled.is_set() or self.abandoned or time.monotonic() >= self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled("the generation was cancelled")
        if self._lease_lost.is_set():
            raise LeaseLost("the job's lease was lost")
        if self._abandon.is_set():
            raise JobCancelled("the worker is shutting down")
        if time.monotonic() >= self.deadline:
            raise DeadlineExceeded(
                f"the job ran past WORKER_JOB_TIMEOUT ({self.services.settings.job_timeout:.0f}s)"
            )

    def log(
        self, action: str, message: str, *args: Any, level: int = logging.INFO, **fields: Any
    ) -> None:
        extra = {"action": action, "worker_id": self.worker_id, **self.job.log_fields(), **fields}
        log.log(level, message, *args, extra=extra)


Handler = Callable[[JobContext], Mapping[str, Any]]


def required(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None or str(value).strip() == "":
        raise InvalidInput(f"job payload is missing {key!r}")
    return str(value)
