"""What every part of the worker receives: the settings and the ports (``Services``), built
once by ``worker.wiring``; and the credit gate that pauses generate-image claims."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.jobs import GENERATE_IMAGE
from worker.ports import Fetcher, Generations, ImageModel, ImageStore, Queue
from worker.replicate.polling import PollPlanner, RequestBudget
from worker.settings import Settings


class CreditGate:
    """Shared pauses of claims: generate-image after the provider answered 402 (``pause``);
    every job type, briefly, after a job met PostgREST's schema cache without a function it
    needs (``pause_all``: right after a migration, until the cache reloads)."""

    def __init__(self) -> None:
        self._until = 0.0
        self._all_until = 0.0
        self._lock = threading.Lock()

    def pause_all(self, seconds: float) -> None:
        with self._lock:
            self._all_until = max(self._all_until, time.monotonic() + seconds)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def paused(self) -> bool:
        return time.monotonic() < self._until

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    def claimable(self, job_types: Iterable[str]) -> list[str]:
        """The job types worth claiming now: generate-image waits out a pause (the daemon
        and process-jobs both claim through this)."""
        if time.monotonic() < self._all_until:
            return []
        paused = self.paused()
        return [t for t in job_types if not (paused and t == GENERATE_IMAGE)]


@dataclass
class Services:
    settings: Settings
    queue: Queue
    generations: Generations
    store: ImageStore
    model: ImageModel
    fetch_outputs: Fetcher  # provider outputs: WORKER_ALLOWED_DOWNLOAD_HOSTS
    fetch_sources: Fetcher  # img2img sources: WORKER_ALLOWED_SOURCE_HOSTS
    credit: CreditGate = field(default_factory=CreditGate)
    # When to poll a running prediction, under this worker's share of the request budget
    # (the model port's budget is the same object: worker.wiring).
    polling: PollPlanner = field(default_factory=lambda: PollPlanner(RequestBudget(2400.0)))
