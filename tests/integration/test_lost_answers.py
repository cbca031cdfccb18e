"""Answers lost after the commit (issue 12, point 4), driven by the stack's fault switch:
``drop`` (the connection closes with no response after the service committed) and status
faults with ``after_upstream`` (the gateway's 504 replaces a committed answer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture, StackControl, WorkerProcess, running_worker, wait_until

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")

LOST = {
    "drop": {"fault": "drop"},
    "504": {"fault": "504", "after_upstream": True},
}


@pytest.mark.parametrize("fault", sorted(LOST))
def test_a_final_failure_whose_answer_was_lost_still_fails_the_generation(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
    fault: str,
) -> None:
    """The model fails (permanent): complete_job records the failure, its answer is lost,
    the in-process retry meets the fence (PW001). The row shows our failure: the generation
    is failed, not left `processing`."""
    fake.configure(fail_rate=1.0, latency_seconds=0.2)
    user = picture.create_user()
    gid, _ = picture.submit(user, f"lost failure {fault}")
    control.faults({"path": "/rest/v1/rpc/complete_job", "methods": ["POST"], "count": 1,
                    **LOST[fault]})
    with running_worker(stack_state, log_dir) as worker:
        gen = picture.wait_status(gid, timeout=30)
    assert control.fault_counts()["injected"].get(fault) == 1
    assert gen["status"] == "failed", gen
    assert "NSFW" in (gen["error_message"] or "")
    [job] = picture.jobs_for(gid)
    assert (job["status"], job["attempt_number"]) == ("failed", 1)
    assert worker.actions("supabase.answer_recovered")
    assert not worker.actions("job.lease_lost")


def test_a_success_whose_answer_was_lost_is_a_success(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=0.2)
    user = picture.create_user()
    gid, job_id = picture.submit(user, "lost success")
    control.faults({"path": "/rest/v1/rpc/complete_job", "methods": ["POST"], "count": 1,
                    "fault": "drop"})
    with running_worker(stack_state, log_dir) as worker:
        gen = picture.wait_status(gid, timeout=30)
        wait_until(lambda: len(worker.actions("job.completed")) >= 2, 10,
                   message="both jobs reported")
    assert gen["status"] == "completed", gen
    assert worker.actions("job.completed")[0]["job_id"] == job_id
    assert not worker.actions("job.lease_lost")


def test_a_claim_whose_answer_was_lost_is_handed_back_at_once(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
) -> None:
    """claim_work commits (the job is `processing` under the worker, an attempt spent) and
    the connection drops. The worker hands back what it holds but does not know: the job
    runs at once with its attempt given back, not after its 60 s lease."""
    fake.configure(latency_seconds=0.2)
    user = picture.create_user()
    gid, _ = picture.submit(user, "lost claim")
    control.faults({"path": "/rest/v1/rpc/claim_work", "fault": "drop", "count": 1})
    worker = WorkerProcess(stack_state, log_dir, WORKER_LEASE_SECONDS=60).start()
    try:
        worker.wait_ready()
        gen = picture.wait_status(gid, timeout=20)
    finally:
        worker.stop()
    assert control.fault_counts()["injected"].get("drop") == 1
    assert gen["status"] == "completed", gen
    assert picture.jobs_for(gid)[0]["attempt_number"] == 1
    recovered = worker.actions("claim.recovered")
    assert recovered and gen["job_id"] in recovered[0]["msg"]


def test_a_completion_that_claimed_and_lost_its_answer_hands_the_claim_back(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
) -> None:
    """One thread, two generations: storing the first image also claims the next job for
    the thread (store_image). That answer is lost after the commit; the in-process retry
    answers again but claims nothing new (the next job is already held under our id). The
    worker hands back the job it holds but does not know, so the second generation runs at
    once, not after its 60 s lease."""
    fake.configure(latency_seconds=0.2)
    user = picture.create_user()
    first, _ = picture.submit(user, "chained lost answer 1")
    second, second_job = picture.submit(user, "chained lost answer 2")
    control.faults({"path": "/rest/v1/rpc/store_image", "methods": ["POST"], "count": 1,
                    "fault": "drop"})
    worker = WorkerProcess(
        stack_state, log_dir, WORKER_LEASE_SECONDS=60, WORKER_CONCURRENCY=1
    ).start()
    try:
        worker.wait_ready()
        gens = [picture.wait_status(gid, timeout=25) for gid in (first, second)]
    finally:
        worker.stop()
    assert control.fault_counts()["injected"].get("drop") == 1
    assert [g["status"] for g in gens] == ["completed", "completed"], gens
    recovered = worker.actions("claim.recovered")
    assert recovered and second_job in recovered[0]["msg"], recovered
    assert not worker.actions("job.lease_lost")
