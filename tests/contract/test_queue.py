"""The queue port: claim order, leases, fencing (PW001), retries, release, dedupe keys,
suspects and stale-lease recovery, on the in-memory double and on the real RPCs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.contract.conftest import FLUX, SDXL, SDXL_VERSION, Backend, gen
from worker.errors import LeaseLost, PermanentError
from worker.jobs import DOWNLOAD_IMAGE, GENERATE_IMAGE, PROCESS_WEBHOOK, parse_ts
from worker.statuses import GenerationStatus, JobStatus

TYPES = [GENERATE_IMAGE, DOWNLOAD_IMAGE]
JOB_COLUMNS = {  # job_queue as the migrations define it; a new column needs the double too
    "id", "job_type", "payload", "status", "priority", "attempt_number", "max_attempts",
    "scheduled_at", "started_at", "completed_at", "result", "error_message", "error_details",
    "created_by", "locked_by", "locked_until", "dedupe_key", "created_at", "updated_at",
    "attempts",
}
LEASE = 60


def _ts(value: object) -> datetime:
    parsed = parse_ts(value)
    assert parsed is not None
    return parsed


# -- claiming ------
def test_claim_order_is_priority_then_scheduled_then_created(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    first = q.enqueue(GENERATE_IMAGE, gen(n=1))
    second = q.enqueue(GENERATE_IMAGE, gen(n=2))
    urgent = q.enqueue(GENERATE_IMAGE, gen(n=3), priority=5)
    older = q.enqueue(GENERATE_IMAGE, gen(n=4))
    backend.make_due(older, seconds_ago=30)  # scheduled earlier than the others
    claimed = q.claim(10, TYPES, worker_id, LEASE)
    assert [j.id for j in claimed] == [urgent, older, first, second]


def test_a_claim_takes_at_most_limit_jobs_of_the_given_types(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    ids = [q.enqueue(GENERATE_IMAGE, gen(n=n)) for n in range(3)]
    other = q.enqueue(PROCESS_WEBHOOK, {"prediction_id": "p"})
    assert len(q.claim(2, TYPES, worker_id, LEASE)) == 2
    rest = q.claim(5, TYPES, worker_id, LEASE)
    assert [j.id for j in rest] == ids[2:]
    assert q.claim(5, TYPES, worker_id, LEASE) == []
    assert backend.job(other)["status"] == JobStatus.PENDING


def test_a_claim_sets_the_lease_and_counts_the_attempt(backend: Backend, worker_id: str) -> None:
    job_id = backend.queue.enqueue(GENERATE_IMAGE, gen(generation_id="g"), max_attempts=4)
    before = datetime.now(UTC)
    [job] = backend.queue.claim(1, TYPES, worker_id, LEASE)
    assert (job.id, job.attempt_number, job.max_attempts) == (job_id, 1, 4)
    # enqueue_job fills the catalogue's version in (none for an official model)
    assert job.payload == {**gen(generation_id="g"), "model_version": None} and not job.suspect
    assert row_attempts(backend, job_id) == 1
    row = backend.job(job_id)
    assert set(row) == JOB_COLUMNS
    assert row["status"] == JobStatus.PROCESSING and row["locked_by"] == worker_id
    lease_end = _ts(row["locked_until"])
    assert before + timedelta(seconds=LEASE - 5) < lease_end < before + timedelta(seconds=LEASE + 5)


# -- leases and fencing ------
def test_heartbeat_extends_our_lease_and_reports_someone_elses(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen())
    q.claim(1, TYPES, worker_id, 10)
    row = q.heartbeat(job_id, worker_id, 600)
    assert row is not None and row["locked_by"] == worker_id
    assert _ts(row["locked_until"]) > datetime.now(UTC) + timedelta(seconds=500)
    other = q.heartbeat(job_id, "someone-else", 600)  # not theirs: nothing extended
    assert other is not None and other["locked_by"] == worker_id
    assert q.heartbeat("00000000-0000-4000-8000-000000000000", worker_id, 600) is None


def test_complete_is_fenced_by_the_worker_id(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen())
    q.claim(1, TYPES, worker_id, LEASE)
    with pytest.raises(LeaseLost):
        q.complete(job_id, "someone-else", {"ok": True})
    with pytest.raises(LeaseLost):
        q.fail(job_id, "someone-else", "boom", None, True)
    row = q.complete(job_id, worker_id, {"ok": True})
    assert row["status"] == JobStatus.COMPLETED and row["result"] == {"ok": True}
    assert row["locked_by"] is None
    with pytest.raises(LeaseLost):  # once finished, a second report is refused too
        q.complete(job_id, worker_id, {"ok": True})


def test_completing_an_unknown_job_is_a_permanent_error(backend: Backend, worker_id: str) -> None:
    with pytest.raises(PermanentError):
        backend.queue.complete("00000000-0000-4000-8000-000000000000", worker_id, None)


def test_a_worker_whose_lease_expired_cannot_report(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen())
    q.claim(1, TYPES, worker_id, LEASE)
    backend.expire_lease(job_id)
    assert q.requeue_stale() == 1
    with pytest.raises(LeaseLost):
        q.complete(job_id, worker_id, {})
    row = q.heartbeat(job_id, worker_id, LEASE)
    assert row is not None and row["status"] == JobStatus.PENDING  # the worker learns it


# -- outcomes ------
def test_a_retryable_failure_goes_back_to_pending_after_a_backoff(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen(), max_attempts=2)
    q.claim(1, TYPES, worker_id, LEASE)
    row = q.fail(job_id, worker_id, "provider busy", {"attempt": 1}, True)
    assert row["status"] == JobStatus.PENDING and row["error_message"] == "provider busy"
    assert row["error_details"] == {"attempt": 1} and row["locked_by"] is None
    due = _ts(row["scheduled_at"])
    assert datetime.now(UTC) + timedelta(seconds=1) < due < datetime.now(UTC) + timedelta(seconds=5)
    assert q.claim(1, TYPES, worker_id, LEASE) == []  # not before its time
    nxt = q.next_scheduled_at(TYPES)
    assert nxt is not None and abs((nxt - due).total_seconds()) < 0.01
    backend.make_due(job_id)
    [again] = q.claim(1, TYPES, worker_id, LEASE)
    assert again.attempt_number == 2
    final = q.fail(job_id, worker_id, "provider busy", None, True)  # attempts used up
    assert final["status"] == JobStatus.FAILED and final["completed_at"] is not None


def test_a_permanent_failure_fails_at_once(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen(), max_attempts=3)
    q.claim(1, TYPES, worker_id, LEASE)
    assert q.fail(job_id, worker_id, "bad input", None, False)["status"] == JobStatus.FAILED


def test_release_gives_the_attempt_back(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen())
    q.claim(1, TYPES, worker_id, LEASE)
    assert not q.release(job_id, "someone-else")
    assert q.release(job_id, worker_id)
    row = backend.job(job_id)
    assert row["status"] == JobStatus.PENDING and row["attempt_number"] == 0
    assert row["locked_by"] is None and row["started_at"] is None
    assert not q.release(job_id, worker_id)  # no longer ours
    [job] = q.claim(1, TYPES, worker_id, LEASE)
    assert job.attempt_number == 1


def test_release_lost_hands_back_the_claims_a_worker_does_not_know(
    backend: Backend, worker_id: str
) -> None:
    q = backend.queue
    running = q.enqueue(GENERATE_IMAGE, gen())
    lost = q.enqueue(GENERATE_IMAGE, gen())
    other = q.enqueue(GENERATE_IMAGE, gen())
    q.claim(2, TYPES, worker_id, LEASE)  # the answer of the second claim was lost
    q.claim(1, TYPES, "someone-else", LEASE)
    assert q.release_lost(worker_id, [running]) == [lost]
    row = backend.job(lost)
    assert row["status"] == JobStatus.PENDING and row["attempt_number"] == 0
    assert row["locked_by"] is None
    assert backend.job(running)["locked_by"] == worker_id
    assert backend.job(other)["locked_by"] == "someone-else"
    assert q.release_lost(worker_id, [running]) == []


def test_read_returns_the_row(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen())
    row = q.read(job_id)
    assert row is not None and row["id"] == job_id and row["status"] == JobStatus.PENDING
    assert q.read("00000000-0000-4000-8000-000000000000") is None


# -- dedupe keys ------
def test_a_dedupe_key_holds_one_live_job(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    first = q.enqueue(DOWNLOAD_IMAGE, {"n": 1}, dedupe_key="download:g1")
    assert q.enqueue(DOWNLOAD_IMAGE, {"n": 2}, dedupe_key="download:g1") == first
    other = q.enqueue(DOWNLOAD_IMAGE, {"n": 3}, dedupe_key="download:g2")
    assert other != first
    q.claim(5, TYPES, worker_id, LEASE)  # still live while processing
    assert q.enqueue(DOWNLOAD_IMAGE, {"n": 4}, dedupe_key="download:g1") == first
    q.complete(first, worker_id, {})
    again = q.enqueue(DOWNLOAD_IMAGE, {"n": 5}, dedupe_key="download:g1")
    assert again not in (first, other)
    assert backend.job(again)["payload"] == {"n": 5}


def test_an_unknown_job_type_is_refused_for_good(backend: Backend) -> None:
    # 23514 (a check violation) is a SQLSTATE, not an HTTP status: permanent
    with pytest.raises(PermanentError):
        backend.queue.enqueue("make-coffee", {})


# -- stale leases and suspects ------
def test_an_expired_lease_makes_the_job_a_suspect(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    suspect = q.enqueue(GENERATE_IMAGE, gen(n=1), priority=5)
    q.claim(1, TYPES, "dead-worker", LEASE)
    backend.expire_lease(suspect)
    bystander = q.enqueue(GENERATE_IMAGE, gen(n=2))
    assert q.requeue_stale() == 1
    row = backend.job(suspect)
    assert row["status"] == JobStatus.PENDING and row["locked_by"] is None
    assert "lease_expired_at" in row["error_details"]
    assert "stopped responding" in row["error_message"]
    busy = q.claim(5, TYPES, worker_id, LEASE, exclude_suspects=True)
    assert [j.id for j in busy] == [bystander]
    [alone] = q.claim(5, TYPES, worker_id, LEASE)
    assert alone.id == suspect and alone.suspect and alone.attempt_number == 2


def test_a_lease_expired_on_the_final_attempt_fails_job_and_generation(backend: Backend) -> None:
    q = backend.queue
    gid = backend.add_generation(status=GenerationStatus.PROCESSING)
    job_id = q.enqueue(GENERATE_IMAGE, gen(generation_id=gid), max_attempts=1)
    q.claim(1, TYPES, "dead-worker", LEASE)
    backend.expire_lease(job_id)
    assert q.requeue_stale() == 1
    row = backend.job(job_id)
    assert row["status"] == JobStatus.FAILED and "final attempt" in row["error_message"]
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.FAILED
    assert "abandoned" in str(row["error_message"])


def test_a_requeued_job_puts_its_generation_back_to_queued(backend: Backend) -> None:
    q = backend.queue
    gid = backend.add_generation(status=GenerationStatus.DOWNLOADING)
    job_id = q.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid})
    q.claim(1, TYPES, "dead-worker", LEASE)
    assert q.requeue_stale() == 0  # the lease still runs
    backend.expire_lease(job_id)
    assert q.requeue_stale() == 1
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.QUEUED


# -- what a running job learns from its heartbeat ------
def test_a_cancelled_generation_shows_in_the_heartbeat(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    gid = backend.add_generation(status=GenerationStatus.QUEUED)
    job_id = q.enqueue(GENERATE_IMAGE, gen(generation_id=gid))
    waiting = q.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid})
    q.claim(1, [GENERATE_IMAGE], worker_id, LEASE)
    backend.cancel_generation(gid)
    row = q.heartbeat(job_id, worker_id, LEASE)
    assert row is not None and row["status"] == JobStatus.CANCELLED
    assert backend.job(waiting)["status"] == JobStatus.CANCELLED
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.CANCELLED
    with pytest.raises(LeaseLost):
        q.complete(job_id, worker_id, {})


# -- webhook mode's safety net ------
def test_webhook_checks_are_enqueued_once_per_silent_prediction(backend: Backend) -> None:
    q = backend.queue
    silent = backend.add_generation(status=GenerationStatus.PROCESSING)
    backend.generations.update(silent, {"replicate_prediction_id": "pred-silent"})
    busy = backend.add_generation(status=GenerationStatus.PROCESSING)
    backend.generations.update(busy, {"replicate_prediction_id": "pred-busy"})
    q.enqueue(GENERATE_IMAGE, gen(generation_id=busy))  # a live job holds it
    # (on the shared stack, earlier tests' silent generations are checked too)
    assert q.enqueue_webhook_checks(0, 10_000) >= 1
    assert q.enqueue_webhook_checks(0, 10_000) == 0  # every check is still live
    check = q.enqueue(PROCESS_WEBHOOK, {}, dedupe_key="webhook:pred-silent")  # the live one
    payload = backend.job(check)["payload"]
    assert payload["fetch"] is True and payload["prediction_id"] == "pred-silent"
    assert payload["generation_id"] == silent
    none = q.enqueue(PROCESS_WEBHOOK, {}, dedupe_key="webhook:pred-busy")  # a new job
    assert backend.job(none)["payload"] == {}


def row_attempts(backend: Backend, job_id: str) -> object:
    """Variant M's ``attempts``, kept beside ``attempt_number``."""
    return backend.job(job_id)["attempts"]


# -- the catalogue decides what runs ------
@pytest.mark.parametrize(
    ("payload", "refusal"),
    [
        ({}, "model_id is required"),
        ({"model_id": "attacker/model"}, "Unknown model: attacker/model"),
        ({"model_id": FLUX, "model_version": SDXL_VERSION}, "model_version"),
        ({"model_id": SDXL, "model_version": "attacker/model:abc"}, "model_version"),
    ],
)
def test_a_generate_image_job_names_a_catalogue_model_and_its_version(
    backend: Backend, payload: dict[str, object], refusal: str
) -> None:
    with pytest.raises(PermanentError) as refused:
        backend.queue.enqueue(GENERATE_IMAGE, payload)
    assert refusal in refused.value.message


def test_the_catalogue_fills_in_a_missing_version(backend: Backend, worker_id: str) -> None:
    job_id = backend.queue.enqueue(GENERATE_IMAGE, {"model_id": SDXL})
    assert backend.job(job_id)["payload"] == {"model_id": SDXL, "model_version": SDXL_VERSION}
