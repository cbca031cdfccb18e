"""The worker's own services, built once and on first use, for process-jobs and
process-generation.

They come from ``worker.wiring.build_services`` with the worker's ``Settings`` read from the
same mapping as the app's configuration (validated at app start when a Replicate token is
set). Jobs and generations run on a thread pool of their own, so a long Replicate wait never
occupies Starlette's pool, which the other endpoints use for their Supabase calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from functions_compat.config import FunctionsConfig
from functions_compat.http import HttpError
from worker import wiring
from worker.metrics import Metrics, worker_metrics
from worker.runner import Runner
from worker.services import Services
from worker.settings import Settings

T = TypeVar("T")
JOB_THREADS = 16


@dataclass(frozen=True)
class WorkerRuntime:
    settings: Settings
    services: Services
    metrics: Metrics

    def runner(self, worker_id: str) -> Runner:
        """A runner whose complete_job calls are fenced by ``worker_id``."""
        return Runner(self.services, worker_id, self.metrics)


class WorkerRuntimes:
    def __init__(self, config: FunctionsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._runtime: WorkerRuntime | None = None
        self.executor = ThreadPoolExecutor(max_workers=JOB_THREADS, thread_name_prefix="fn-job")

    async def get(self, function: str) -> WorkerRuntime:
        """The runtime, or 500 naming the missing configuration."""
        settings = self.config.worker_settings
        if settings is None:
            problem = self.config.worker_config_problem or "worker settings missing"
            raise HttpError(500, f"{function} is not configured: {problem}")
        if self._runtime is None:
            return await run_in_threadpool(self._build, settings)
        return self._runtime

    def _build(self, settings: Settings) -> WorkerRuntime:
        with self._lock:
            if self._runtime is None:
                services = wiring.build_services(settings)
                self._runtime = WorkerRuntime(settings, services, worker_metrics())
            return self._runtime

    async def run(self, fn: Callable[[], T]) -> T:
        """Run blocking, possibly long work on the job pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
