"""Realtime as hosted Supabase runs it (issue 12, point 3): the join reply comes before the
subscription exists ("Subscribed to PostgreSQL" follows), and a table outside the
``supabase_realtime`` publication gets a system error that the server never retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture, StackControl, running_worker, wait_until

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")

SLOW_POLLS = {"WORKER_POLL_INTERVAL": 30, "WORKER_POLL_INTERVAL_DEGRADED": 30}


def test_subscribed_means_the_server_confirmed_it(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
) -> None:
    """With 2 s between the join reply and the subscription, a job inserted as soon as the
    worker says it is subscribed must arrive as an event (polls are 30 s apart)."""
    control.settings(realtime_subscribe_delay=2.0)
    fake.configure(latency_seconds=0.1)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, **SLOW_POLLS) as worker:
        worker.wait_subscribed(timeout=20)
        gid, _ = picture.submit(user, "right after the subscription")
        gen = picture.wait_status(gid, timeout=10)
    assert gen["status"] == "completed", gen
    assert len(worker.actions("realtime.subscribed")) == 1


@pytest.fixture
def unpublished(admin_conn: psycopg.Connection) -> Iterator[None]:
    admin_conn.execute("alter publication supabase_realtime drop table public.job_queue")
    try:
        yield
    finally:
        admin_conn.execute("alter publication supabase_realtime add table public.job_queue")


@pytest.mark.usefixtures("unpublished")
def test_an_unpublished_table_is_one_error_and_degraded_polling(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.1)
    user = picture.create_user()
    env = {"WORKER_POLL_INTERVAL": 30, "WORKER_POLL_INTERVAL_DEGRADED": 0.5}
    with running_worker(stack_state, log_dir, **env) as worker:
        errors = wait_until(lambda: worker.actions("realtime.unpublished"), 15,
                            message="the publication error")
        time.sleep(4.0)  # long enough for several resubscriptions, were it spinning
        gid, _ = picture.submit(user, "found by degraded polling")
        gen = picture.wait_status(gid, timeout=10)
    assert gen["status"] == "completed", gen
    assert len(worker.actions("realtime.unpublished")) == 1
    assert errors[0]["level"].upper() == "ERROR"
    assert "supabase_realtime" in errors[0]["msg"] and "job_queue" in errors[0]["msg"]
    assert not worker.actions("realtime.subscribed")
    assert len(worker.actions("realtime.retry")) <= 1
