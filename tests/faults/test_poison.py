"""Poison jobs: one whose handler raises an unexpected exception on every attempt, one that
kills its worker every time it starts. Both must end ``failed`` after max_attempts and
never hold up the other generations submitted beside them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from devstack.stack import StackState
from tests.faults.checks import assert_completed_once, facts, wait_terminal
from tests.faults.conftest import SHORT_LEASE, Workers
from tests.support import Fake, Picture, WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")]

MAX_ATTEMPTS = 3
# A download-image job whose output_url urllib cannot split ("Invalid IPv6 URL"): with no
# "format" in the payload the handler derives the format from the URL before the safe
# fetcher (which would refuse it cleanly) ever sees it, so the handler raises ValueError.
UNPARSABLE_URL = "https://[replicate.delivery/pbxt/out-0.webp"


def _generation_row(picture: Picture, user: str, prompt: str) -> str:
    rows = picture.db.table("image_generations").insert({
        "user_id": user, "prompt": prompt, "model": "FLUX Schnell", "width": 1024,
        "height": 1024, "status": "queued",
    }).execute().data
    assert isinstance(rows, list) and isinstance(rows[0], dict)
    return str(rows[0]["id"])


@pytest.mark.timeout(90)
def test_job_that_raises_unexpectedly_fails_after_max_attempts_without_blocking_others(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    workers: Workers,
    admin_conn: psycopg.Connection,
) -> None:
    user = picture.create_user()
    marker = uuid.uuid4().hex[:8]
    worker = workers.start(stack_state, WORKER_CONCURRENCY=2, WORKER_POLL_INTERVAL=0.5)
    poison_gid = _generation_row(picture, user, f"{marker} poison")
    poison_job = picture.db.rpc("enqueue_job", {
        "p_job_type": "download-image",
        "p_payload": {"generation_id": poison_gid, "user_id": user, "output_url": UNPARSABLE_URL,
                      "model_id": "black-forest-labs/flux-schnell"},
        "p_priority": 5,  # claimed first, every time it is due
        "p_max_attempts": MAX_ATTEMPTS,
    }).execute().data
    others = [picture.submit(user, f"{marker} bystander {i}")[0] for i in range(6)]
    wait_terminal(admin_conn, [poison_gid, *others], 60)

    rows = facts(admin_conn, [poison_gid, *others])
    assert_completed_once(rows, others)
    job = admin_conn.execute(
        "select status, attempt_number, error_message from public.job_queue where id = %s",
        (poison_job,),
    ).fetchone()
    assert job is not None
    status, attempts, error = job
    assert (status, attempts) == ("failed", MAX_ATTEMPTS), job
    assert error.startswith("internal error: ValueError"), error
    poison = rows[poison_gid]
    assert poison.status == "failed" and poison.error_message == error, poison
    assert poison.images == 0 and not poison.objects
    # One pool thread per attempt raised and survived: same process, traceback logged.
    assert worker.proc is not None and worker.proc.poll() is None
    errors = [e for e in worker.actions("job.error") if e.get("job_id") == poison_job]
    assert len(errors) == MAX_ATTEMPTS and all("ValueError" in e.get("exc", "") for e in errors)
    done = {e["generation_id"] for e in worker.actions("job.completed")}
    assert set(others) <= done, "the same worker finished the other generations"


def _supervise(
    workers: Workers, state: StackState, poison_job: str, settled: Callable[[], bool],
    timeout: float,
) -> list[WorkerProcess]:
    """Run one worker at a time; kill -9 it whenever it starts the poison job."""
    killed: list[WorkerProcess] = []
    worker = workers.start(state, WORKER_POLL_INTERVAL=0.5, **SHORT_LEASE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("job_id") == poison_job for e in worker.actions("job.started")):
            worker.kill()
            killed.append(worker)
            worker = workers.start(state, WORKER_POLL_INTERVAL=0.5, **SHORT_LEASE)
        elif settled():
            return killed
        time.sleep(0.02)
    raise AssertionError(f"not settled in {timeout}s after {len(killed)} kill(s)")


@pytest.mark.timeout(120)
def test_job_that_kills_its_worker_fails_after_max_attempts_without_blocking_others(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    workers: Workers,
    admin_conn: psycopg.Connection,
) -> None:
    fake.configure(latency_seconds=0.3)
    user = picture.create_user()
    marker = uuid.uuid4().hex[:8]
    poison_gid, poison_job = picture.submit(user, f"{marker} kills its worker",
                                            max_attempts=MAX_ATTEMPTS)
    others = [picture.submit(user, f"{marker} bystander {i}")[0] for i in range(8)]
    all_gids = [poison_gid, *others]

    def settled() -> bool:
        try:
            wait_terminal(admin_conn, all_gids, 0.01)
        except AssertionError:
            return False
        return True

    killed = _supervise(workers, stack_state, poison_job, settled, 90)
    assert len(killed) == MAX_ATTEMPTS, "killed at every attempt, then never started again"
    rows = facts(admin_conn, all_gids)
    job = admin_conn.execute(
        "select status, attempt_number, error_message, completed_at from public.job_queue"
        " where id = %s",
        (poison_job,),
    ).fetchone()
    assert job is not None and job[:2] == ("failed", MAX_ATTEMPTS), job
    assert "lease expired on the final attempt" in job[2], job
    assert rows[poison_gid].status == "failed" and rows[poison_gid].images == 0
    assert workers.started[-1].proc is not None and workers.started[-1].proc.poll() is None

    # A bystander could only fail "on its final attempt" by dying with the poison job each time.
    collateral = sorted(
        str(gid) for gid, in admin_conn.execute(
            "select payload->>'generation_id' from public.job_queue"
            " where payload->>'generation_id' = any(%s) and status = 'failed'"
            " and error_message like %s",
            (others, "%lease expired on the final attempt%"),
        ).fetchall()
    )
    started = {e.get("generation_id") for w in killed for e in w.actions("job.started")}
    assert set(collateral) <= started, "abandoned only if it was running when a worker died"
    spared = [g for g in others if g not in collateral]
    assert_completed_once(rows, spared)
    finished_first = admin_conn.execute(
        "select count(*) from public.image_generations where id = any(%s::uuid[])"
        " and completed_at < %s",
        (spared, job[3]),
    ).fetchone()
    assert finished_first is not None and finished_first[0] == len(spared), (
        "the other generations finished while the poison job was still being retried"
    )
    lost = {g: rows[g].status for g in collateral if rows[g].status != "completed"}
    # Jobs whose worker died are suspects and run alone afterwards (claim_jobs'
    # p_exclude_suspects): the bystanders killed with the poison job the first time finish
    # on their next attempt instead of dying with it until their attempts run out.
    assert not lost, f"bystanders lost with the worker-killing job: {lost}"
    assert_completed_once(rows, others)
