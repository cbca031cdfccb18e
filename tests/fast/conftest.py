"""The fast tier's world: the real daemon, runner and handlers on the in-memory ports.

Nothing of ours is patched: ``World`` wires ``Services`` from the in-memory queue,
generations, store, model and fetchers (worker.adapters.memory*), exactly as
``worker.wiring`` wires the real adapters, with settings validated like the daemon's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions_compat.config import WorkerEnvSettings
from worker.adapters.memory import MemoryDatabase
from worker.adapters.memory_provider import MemoryFetcher, MemoryModel, Script
from worker.context import JobContext
from worker.jobs import GENERATE_IMAGE, Job
from worker.metrics import Metrics, worker_metrics
from worker.services import Services
from worker.settings import Settings
from worker.statuses import GenerationStatus

BASE_ENV = {
    "SUPABASE_URL": "http://127.0.0.1:9",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-key",
    "REPLICATE_API_TOKEN": "r8_memory",
    "WORKER_ID": "fast-worker",
    "WORKER_REALTIME": "false",
    "WORKER_POLL_INTERVAL": "0.05",
    "WORKER_HEARTBEAT_INTERVAL": "0.05",
    "WORKER_LEASE_SECONDS": "30",
    "WORKER_SHUTDOWN_GRACE": "5",
    "WORKER_HEALTH_PORT": "0",
}


def settings(**env: Any) -> Settings:
    """The daemon's Settings from these variables only (never os.environ)."""
    return WorkerEnvSettings.load(**{**BASE_ENV, **{k: str(v) for k, v in env.items()}})


@dataclass
class World:
    settings: Settings
    db: MemoryDatabase = field(default_factory=MemoryDatabase)
    model: MemoryModel = field(default_factory=MemoryModel)
    outputs: MemoryFetcher = field(default_factory=MemoryFetcher)
    sources: MemoryFetcher = field(default_factory=MemoryFetcher)
    metrics: Metrics = field(default_factory=worker_metrics)
    services: Services = field(init=False)

    def __post_init__(self) -> None:
        self.services = Services(
            settings=self.settings,
            queue=self.db.queue,
            generations=self.db.generations,
            store=self.db.store,
            model=self.model,
            fetch_outputs=self.outputs,
            fetch_sources=self.sources,
        )

    # -- what the app does ------
    def submit(
        self, model_id: str = "black-forest-labs/flux-schnell", *, max_attempts: int = 3, **extra: Any
    ) -> tuple[str, str]:
        """A generation and its generate-image job, as start-generation creates them."""
        user = str(uuid.uuid4())
        gid = self.db.generations.add(
            user_id=user, prompt="a lighthouse", model="flux-schnell", width=1024, height=1024
        )
        payload = {
            "generation_id": gid,
            "user_id": user,
            "prompt": "a lighthouse",
            "model_id": model_id,
            "width": 1024,
            "height": 1024,
            **extra,
        }
        job_id = self.db.queue.enqueue(GENERATE_IMAGE, payload, max_attempts=max_attempts)
        self.db.generations.update(gid, {"status": GenerationStatus.QUEUED, "job_id": job_id})
        return gid, job_id

    def generation(self, gid: str) -> dict[str, Any]:
        row = self.db.generations.get(gid)
        assert row is not None
        return dict(row)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.db.queue.row(job_id)

    # -- running one job by hand (what the daemon does for each claim) ------
    def claim(self, job_types: list[str] | None = None, worker_id: str = "fast-worker") -> Job:
        types = job_types or list(self.settings.job_types)
        [job] = self.db.queue.claim(1, types, worker_id, self.settings.lease_seconds)
        return job

    def context(self, job: Job, worker_id: str = "fast-worker") -> JobContext:
        return JobContext(job, self.services, worker_id, self.settings.job_timeout)


@pytest.fixture
def world_factory() -> Callable[..., World]:
    def make(script: Script | None = None, **env: Any) -> World:
        return World(settings(**env), model=MemoryModel(script))

    return make


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    return world_factory()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
