"""Fixtures of the fault suite: gates and a worker pool (picture, fake, log_dir and
quiet_queue come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import StackState
from tests.faults.gates import INSTALL, UNINSTALL, Gates
from tests.support import WorkerProcess

# A lease a test can wait out: a killed worker's jobs come back within ~6 s.
SHORT_LEASE: dict[str, Any] = {
    "WORKER_LEASE_SECONDS": 5,
    "WORKER_HEARTBEAT_INTERVAL": 1,
    "WORKER_REQUEUE_INTERVAL": 1,
}


class Workers:
    """Worker processes started by one test; all of them are stopped (or reaped) at its end."""

    def __init__(self, logs: Path) -> None:
        self.log_dir = logs
        self.started: list[WorkerProcess] = []

    def start(self, state: StackState, *, ready: bool = True, **env: Any) -> WorkerProcess:
        worker = WorkerProcess(state, self.log_dir, **env).start()
        self.started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.stop(timeout=10)


@pytest.fixture
def workers(log_dir: Path) -> Iterator[Workers]:
    pool = Workers(log_dir)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def gates(stack_state: StackState) -> Iterator[Gates]:
    dsn = f"host=127.0.0.1 port={stack_state.pg_port} user=supabase_admin dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSTALL)
        gate = Gates(conn)
        try:
            yield gate
        finally:
            gate.release()
            conn.execute(UNINSTALL)
