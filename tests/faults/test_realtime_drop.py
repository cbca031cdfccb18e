"""Realtime drops: pickup falls back to (faster) polling, then Realtime comes back by itself.

The poll interval is 30 s and the degraded one 0.5 s, so the pickup latency tells which path
woke the worker: well under a second with Realtime up (an INSERT event) or down (degraded
polling), never the 30 s of the normal poll.
"""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest

from devstack.stack import StackState
from tests.faults.conftest import Workers
from tests.support import Fake, Picture, WorkerProcess, wait_until
from worker.jobs import parse_ts

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")]

REFUSE_SECONDS = 10.0  # the server refuses new sockets this long after the drop


def _pickup_latency(picture: Picture, user: str, prompt: str) -> float:
    """Submit on an idle worker; seconds from the job's insert to its claim."""
    time.sleep(0.6)  # let the worker go idle (past the wake of the previous job's end)
    gid, _ = picture.submit(user, prompt)
    job = wait_until(lambda: (j := picture.jobs_for(gid)[0])["started_at"] and j, 20,
                     interval=0.05, message=f"claim of {prompt!r}")
    picture.wait_status(gid, timeout=20)
    started, created = parse_ts(job["started_at"]), parse_ts(job["created_at"])
    assert started is not None and created is not None
    return (started - created).total_seconds()


def _gauge(worker: WorkerProcess, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", worker.metrics(), re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _drop(state: StackState, pause: float) -> int:
    response = httpx.post(
        f"{state.url}/_stack/realtime/drop",
        params={"pause": pause},
        headers={"Authorization": f"Bearer {state.keys.service_role_key}"},
        timeout=5,
    )
    response.raise_for_status()
    return int(response.json()["dropped"])


@pytest.mark.timeout(120)
def test_realtime_drop_falls_back_to_polling_and_recovers(
    stack_state: StackState, picture: Picture, fake: Fake, workers: Workers
) -> None:
    fake.configure(latency_seconds=0.1)
    user = picture.create_user()
    marker = uuid.uuid4().hex[:8]
    worker = workers.start(
        stack_state, WORKER_POLL_INTERVAL=30, WORKER_POLL_INTERVAL_DEGRADED=0.5
    ).wait_subscribed()
    time.sleep(1.0)  # past the poll that follows the subscription

    before = [_pickup_latency(picture, user, f"{marker} realtime {i}") for i in range(2)]
    assert max(before) < 1.0, before
    assert _gauge(worker, "picture_worker_realtime_connected") == 1

    assert _drop(stack_state, REFUSE_SECONDS) >= 1, "the worker's socket was dropped"
    dropped_at = time.monotonic()
    wait_until(lambda: worker.actions("realtime.retry"), 10, message="the worker to notice")
    noticed = time.monotonic() - dropped_at
    assert _gauge(worker, "picture_worker_realtime_connected") == 0
    degraded: list[float] = []
    while time.monotonic() - dropped_at < REFUSE_SECONDS - 4.0 or len(degraded) < 2:
        degraded.append(_pickup_latency(picture, user, f"{marker} degraded {len(degraded)}"))
        assert len(degraded) < 8
    assert max(degraded) < 1.5, f"degraded polling (0.5 s) picked up in {degraded}"
    assert len(worker.actions("realtime.subscribed")) == 1, "Realtime was refused meanwhile"

    wait_until(lambda: len(worker.actions("realtime.subscribed")) >= 2, 40, interval=0.2,
               message="Realtime to resubscribe by itself")
    assert _gauge(worker, "picture_worker_realtime_connected") == 1
    time.sleep(1.0)
    after = [_pickup_latency(picture, user, f"{marker} recovered {i}") for i in range(2)]
    assert max(after) < 1.0, after
    assert worker.proc is not None and worker.proc.poll() is None
    print(f"drop noticed after {noticed:.1f}s; pickup realtime {before}, degraded {degraded}, "
          f"recovered {after}")
