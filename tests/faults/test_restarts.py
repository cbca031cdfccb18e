"""Postgres and stack-server restarts under load, on a stack of this module's own.

The session stack is never restarted (other tests use it). The worker talks to a fake
Replicate in a process of its own, because the stack's server hosts the stack's fake and
restarting it would forget the predictions in flight (the real Replicate would not).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devstack.stack import Stack, StackState
from tests.faults.checks import Facts, assert_completed_once, facts, predictions_by_prompt
from tests.faults.conftest import SHORT_LEASE, Workers
from tests.faults.fake_server import standalone_fake
from tests.support import Picture, WorkerProcess, wait_until

pytestmark = [pytest.mark.faults]

LOAD = 20  # generations in flight when the restart happens
AFTER = 5  # generations submitted once the stack is back


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    # Not under pytest's tmp_path: pytest resets /tmp/pytest-of-<user> to 0700 whenever a
    # session starts, which would lock the postgres server user out of its data directory.
    root = Path(tempfile.mkdtemp(prefix="picture-faults-"))
    stack = Stack(root / "s", fast=True)
    try:
        state = stack.up()
        # LOAD + AFTER generations of one user: no per-user in-flight limit here.
        dsn = f"host=127.0.0.1 port={state.pg_port} user=supabase_admin dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("update public.picture_settings set max_in_flight_per_user = 0")
        yield stack
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def own_fake() -> Iterator[str]:
    with standalone_fake() as base:
        yield base


def _admin_facts(state: StackState, gids: list[str]) -> dict[str, Facts] | None:
    """Facts through a fresh connection (None while the database is unreachable)."""
    dsn = f"host=127.0.0.1 port={state.pg_port} user=supabase_admin dbname=postgres"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            return facts(conn, gids)
    except psycopg.OperationalError:
        return None


def _until_ok(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``fn`` until it stops raising (the app's side retries while the stack restarts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} kept failing for {timeout}s") from None
            time.sleep(0.2)


def _submit(picture: Picture, user: str, prompt: str) -> str:
    return picture.submit(user, prompt)[0]


def _in_flight(state: StackState, gids: list[str]) -> int:
    rows = _admin_facts(state, gids) or {}
    return sum(1 for f in rows.values() if f.status in ("processing", "downloading"))


def _run_under_load(
    stack: Stack, fake_url: str, workers: Workers, restart: Callable[[], None]
) -> tuple[WorkerProcess, dict[str, str], dict[str, Facts]]:
    state = stack.state()
    httpx.post(f"{fake_url}/_fake/config", json={"latency_seconds": 1.5, "latency_jitter": 0.5},
               timeout=5).raise_for_status()
    fake_port = fake_url.split(":")[2].split("/")[0]
    worker = workers.start(
        state,
        REPLICATE_API_BASE_URL=fake_url,
        WORKER_DEV_HTTP_HOSTS=f"127.0.0.1:{fake_port},127.0.0.1:{state.api_port}",
        WORKER_CONCURRENCY=4,
        WORKER_POLL_INTERVAL=1,
        **SHORT_LEASE,
    ).wait_subscribed()
    marker = uuid.uuid4().hex[:8]
    picture = Picture(state)
    user = picture.create_user()
    prompts = {picture.submit(user, f"{marker} load {i}")[0]: f"{marker} load {i}"
               for i in range(LOAD)}
    wait_until(lambda: _in_flight(state, list(prompts)) >= 3, 30, interval=0.1,
               message="generations in flight")
    restart()
    picture = Picture(state)  # the app reconnects too
    for i in range(AFTER):
        prompt = f"{marker} after {i}"
        gid = _until_ok(partial(_submit, picture, user, prompt), 30, "submitting after restart")
        prompts[gid] = prompt
    gids = list(prompts)

    def settled() -> dict[str, Facts] | None:
        rows = _admin_facts(state, gids)
        if rows is None or any(
            f.status not in ("completed", "failed", "cancelled")
            or any(j[1] in ("pending", "processing") for j in f.jobs)
            for f in rows.values()
        ):
            return None
        return rows

    rows = wait_until(settled, 90, interval=0.5, message="every generation settled")
    return worker, prompts, rows


def _assert_recovered(
    worker: WorkerProcess, prompts: dict[str, str], rows: dict[str, Facts], fake_url: str
) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, "the daemon kept running"
    assert_completed_once(rows, list(prompts))
    marker = next(iter(prompts.values())).split()[0]
    paid = predictions_by_prompt(fake_url, marker)
    twice = {p: n for p, n in paid.items() if n > 1}
    assert not twice, f"predictions paid twice across the restart: {twice}"
    for f in rows.values():
        assert all(attempt <= max_ for _t, _s, attempt, max_ in f.jobs), f.jobs


@pytest.mark.timeout(150)
def test_postgres_restart_under_load(
    own_stack: Stack, own_fake: str, workers: Workers
) -> None:
    state = own_stack.state()
    started: list[Any] = []

    def postmaster_started() -> Any:
        dsn = f"host=127.0.0.1 port={state.pg_port} user=supabase_admin dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("select pg_postmaster_start_time()").fetchone()
        return row[0] if row else None

    def restart() -> None:
        started.append(postmaster_started())
        own_stack.cluster.stop()
        time.sleep(2.0)  # a real outage, not just a bounce
        own_stack.cluster.start()
        started.append(postmaster_started())

    worker, prompts, rows = _run_under_load(own_stack, own_fake, workers, restart)
    assert started[0] != started[1], "Postgres really restarted"
    _assert_recovered(worker, prompts, rows, own_fake)
    print(f"postgres restart: {len(worker.actions('claim.failed'))} failed claims, "
          f"{len(worker.actions('job.retry'))} job retries, "
          f"{len(worker.actions('job.crashed'))} crashed finishes, "
          f"{len(worker.actions('requeue.done'))} requeues")


@pytest.mark.timeout(150)
def test_stack_server_restart_under_load(
    own_stack: Stack, own_fake: str, workers: Workers
) -> None:
    subscribed: list[int] = []

    def restart() -> None:
        subscribed.append(len(workers.started[-1].actions("realtime.subscribed")))
        own_stack.stop_server()
        time.sleep(2.0)
        own_stack.start_server()

    worker, prompts, rows = _run_under_load(own_stack, own_fake, workers, restart)
    _assert_recovered(worker, prompts, rows, own_fake)
    wait_until(lambda: len(worker.actions("realtime.subscribed")) > subscribed[0], 30,
               message="Realtime resubscribed by itself after the server came back")
    print(f"server restart: {len(worker.actions('claim.failed'))} failed claims, "
          f"{len(worker.actions('job.retry'))} job retries, "
          f"{len(worker.actions('job.crashed'))} crashed finishes, "
          f"{len(worker.actions('requeue.done'))} requeues")
