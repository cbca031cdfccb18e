"""PGRST202 right after a migration (issue 12, point 6). PostgREST reloads its schema cache
only on ``NOTIFY pgrst`` (hosted: sent by the DDL event trigger), and the reload takes a
while (the stack's ``schema_reload_delay``): until then a function the migration created
answers PGRST202. The job is released with its attempt given back and tried again until the
cache has it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture, StackControl, running_worker

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")

# The call that ends a generate job (the prediction succeeded): enqueues its download.
SIGNATURE = "(uuid, text, uuid, text, numeric, jsonb, jsonb, boolean, integer)"
FINISH = f"public.finish_prediction{SIGNATURE}"
PARKED = f"public.finish_prediction_parked{SIGNATURE}"


@pytest.fixture
def parked_finish(
    admin_conn: psycopg.Connection, control: StackControl
) -> Iterator[None]:
    """finish_prediction renamed away (the cache forgets it), then back (the cache learns it
    only after the reload delay), as if a migration had just created it. Afterwards the
    function is back and the cache knows it, whatever the test did."""
    delay = control.settings()["schema_reload_delay"]
    yield
    exists = admin_conn.execute("select to_regprocedure(%s)", (PARKED,)).fetchone()
    if exists is not None and exists[0] is not None:
        admin_conn.execute(f"alter function {PARKED} rename to finish_prediction")
    control.settings(schema_reload_delay=delay)
    admin_conn.execute("notify pgrst, 'reload schema'")
    time.sleep(delay + 1.0)


def test_a_function_the_cache_does_not_know_yet_releases_the_job(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    admin_conn: psycopg.Connection,
    parked_finish: None,
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=0.2)
    user = picture.create_user()
    gid, job_id = picture.submit(user, "right after a migration")
    control.settings(schema_reload_delay=0)
    admin_conn.execute(f"alter function {FINISH} rename to finish_prediction_parked")
    time.sleep(0.5)  # reloaded without it
    control.settings(schema_reload_delay=8)
    admin_conn.execute(f"alter function {PARKED} rename to finish_prediction")
    with running_worker(stack_state, log_dir) as worker:
        gen = picture.wait_status(gid, timeout=40)
    assert gen["status"] == "completed", gen
    waits = worker.actions("job.schema_wait")
    assert waits and "PGRST202" in waits[0]["msg"]
    jobs = picture.jobs_for(gid)
    assert (jobs[0]["id"], jobs[0]["status"], jobs[0]["attempt_number"]) == (
        job_id, "completed", 1
    )
    stats = fake.stats()
    created = stats.get("predictions_created_total",
                        sum(stats.get("predictions_created", {}).values()))
    assert created == 1  # every retry reused the prediction
