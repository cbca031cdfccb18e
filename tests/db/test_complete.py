"""complete_job: outcomes, retry backoff, and fencing by worker id."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.db.dbkit import Database, named_call


def _complete(db: Database, job_id: uuid.UUID, **kwargs: Any) -> tuple[dict[str, Any], float]:
    """complete_job as service_role; returns the row and its scheduled_at - now() in seconds."""
    query, params = named_call("complete_job", job_id=job_id, **kwargs)
    with db.as_role("service_role") as conn:
        now_row = conn.execute("select now() as t").fetchone()
        rows = conn.execute(query, params).fetchall()
    assert now_row is not None and len(rows) == 1
    row = dict(rows[0])
    return row, (row["scheduled_at"] - now_row["t"]).total_seconds()


def _processing_at_attempt(db: Database, attempt: int, max_attempts: int = 3,
                           worker: str = "w1") -> uuid.UUID:
    """A job held by ``worker`` in its ``attempt``-th attempt."""
    job_id = db.enqueue(max_attempts=max_attempts)
    job = db.claim(worker)
    assert job is not None and job["id"] == job_id
    with db.admin() as conn:
        conn.execute("update public.job_queue set attempt_number = %s where id = %s",
                     (attempt, job_id))
    return job_id


def test_success_stores_result_and_completion(db: Database) -> None:
    job_id = _processing_at_attempt(db, 1)
    row, _ = _complete(db, job_id, result={"image_id": "abc"}, worker_id="w1")
    assert row["status"] == "completed"
    assert row["result"] == {"image_id": "abc"}
    assert row["completed_at"] is not None
    assert row["locked_by"] is None and row["locked_until"] is None
    assert db.job(job_id)["status"] == "completed"


def test_retryable_failure_goes_back_to_pending_after_a_backoff(db: Database) -> None:
    job_id = _processing_at_attempt(db, 1)
    row, delay = _complete(db, job_id, error="replicate 503", error_details={"status": 503})
    assert row["status"] == "pending"
    assert row["error_message"] == "replicate 503"
    assert row["error_details"] == {"status": 503}
    assert row["locked_by"] is None and row["completed_at"] is None
    assert 1.0 <= delay <= 3.0  # exponential "from 2 s", with jitter
    assert db.claim() is None  # not claimable before the backoff ends


def test_backoff_grows_with_the_attempt_and_is_jittered(db: Database) -> None:
    delays = []
    for attempt in range(1, 6):
        job_id = _processing_at_attempt(db, attempt, max_attempts=10)
        row, delay = _complete(db, job_id, error="timeout")
        assert row["status"] == "pending"
        delays.append(delay)
    assert delays == sorted(delays) and len(set(delays)) == 5, delays
    assert delays[-1] > 3 * delays[0]
    same_attempt = []
    for _ in range(2):
        job_id = _processing_at_attempt(db, 3, max_attempts=10)
        same_attempt.append(_complete(db, job_id, error="timeout")[1])
    assert same_attempt[0] != same_attempt[1], "no jitter: two retries at one attempt collide"


@pytest.mark.parametrize("attempt", [12, 40, 2000])
def test_backoff_is_capped(db: Database, attempt: int) -> None:
    job_id = _processing_at_attempt(db, attempt, max_attempts=attempt + 1)
    row, delay = _complete(db, job_id, error="timeout")
    assert row["status"] == "pending"
    assert 60 <= delay <= 600, delay


def test_non_retryable_failure_fails_at_once(db: Database) -> None:
    job_id = _processing_at_attempt(db, 1)
    row, _ = _complete(db, job_id, error="unknown model", retryable=False, worker_id="w1")
    assert row["status"] == "failed"
    assert row["attempt_number"] == 1
    assert row["completed_at"] is not None
    assert row["error_message"] == "unknown model"


def test_final_attempt_failure_is_failed(db: Database) -> None:
    job_id = _processing_at_attempt(db, 3, max_attempts=3)
    row, _ = _complete(db, job_id, error="timeout", worker_id="w1")
    assert row["status"] == "failed"
    assert row["completed_at"] is not None
    assert db.claim() is None


def _assert_fenced(db: Database, job_id: uuid.UUID, worker: str, **kwargs: Any) -> None:
    before = db.job(job_id)
    with pytest.raises(psycopg.Error) as caught:
        _complete(db, job_id, worker_id=worker, **kwargs)
    assert caught.value.sqlstate == "PW001"
    assert db.job(job_id) == before


def test_wrong_worker_is_fenced_and_the_row_untouched(db: Database) -> None:
    job_id = _processing_at_attempt(db, 1, worker="w1")
    _assert_fenced(db, job_id, "w2", result={"x": 1})
    _assert_fenced(db, job_id, "w2", error="boom")


def test_stale_worker_after_requeue_and_reclaim_is_fenced(db: Database) -> None:
    job_id = _processing_at_attempt(db, 1, worker="w1")
    db.expire_lease(job_id)
    assert db.service("select public.requeue_stale_jobs() as n")[0]["n"] == 1
    job = db.claim("w2")
    assert job is not None and job["id"] == job_id
    _assert_fenced(db, job_id, "w1", result={"late": True})
    assert db.job(job_id)["locked_by"] == "w2"


def test_completing_a_cancelled_job_with_a_worker_id_is_fenced(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user)
    job_id = db.enqueue(payload={"generation_id": str(gen), "user_id": str(user)})
    assert db.claim("w1") is not None
    db.service("select * from public.cancel_generation(%s)", (gen,))
    _assert_fenced(db, job_id, "w1", result={"x": 1})
    assert db.job(job_id)["status"] == "cancelled"


def test_without_worker_id_the_old_semantics_hold(db: Database) -> None:
    job_id = _processing_at_attempt(db, 1, worker="w1")
    row, _ = _complete(db, job_id, result={"ok": True})
    assert row["status"] == "completed"
    other = _processing_at_attempt(db, 1, worker="w1")
    row, delay = _complete(db, other, error="transient")
    assert row["status"] == "pending" and delay > 0


def test_unknown_job_raises_not_found(db: Database) -> None:
    with pytest.raises(psycopg.Error) as caught:
        _complete(db, uuid.uuid4(), result={})
    assert caught.value.sqlstate == "P0002"
