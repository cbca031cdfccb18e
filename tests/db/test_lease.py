"""Leases: heartbeat_job, release_job, requeue_stale_jobs, cancel_generation's effect."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.db.dbkit import Database


def _requeue(db: Database) -> int:
    return int(db.service("select public.requeue_stale_jobs() as n")[0]["n"])


def _generation_job(db: Database, status: str = "processing", max_attempts: int = 3
                    ) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(user, generation, claimed job serving it)."""
    user = db.make_user()
    gen = db.make_generation(user, status="queued")
    job_id = db.enqueue(payload={"generation_id": str(gen), "user_id": str(user)},
                        max_attempts=max_attempts)
    job = db.claim("w1")
    assert job is not None and job["id"] == job_id
    with db.admin() as conn:
        conn.execute("update public.image_generations set status = %s where id = %s",
                     (status, gen))
    return user, gen, job_id


def test_heartbeat_extends_the_lease(db: Database) -> None:
    job_id = db.enqueue()
    first = db.claim("w1", lease=30)
    assert first is not None
    rows = db.rpc("heartbeat_job", job_id=job_id, worker_id="w1", lease_seconds=600)
    assert len(rows) == 1
    beat = rows[0]
    assert beat["status"] == "processing" and beat["locked_by"] == "w1"
    assert beat["locked_until"] - first["locked_until"] > timedelta(seconds=500)
    assert db.job(job_id)["locked_until"] == beat["locked_until"]


def test_heartbeat_reports_cancellation(db: Database) -> None:
    user, gen, job_id = _generation_job(db)
    lease = db.job(job_id)["locked_until"]
    with db.as_role("authenticated", user) as conn:
        conn.execute("select * from public.cancel_generation(%s)", (gen,))
    beat = db.rpc("heartbeat_job", job_id=job_id, worker_id="w1", lease_seconds=600)
    assert len(beat) == 1
    assert beat[0]["status"] == "cancelled"
    assert beat[0]["locked_until"] is None or beat[0]["locked_until"] <= lease
    assert db.generation(gen)["status"] == "cancelled"


def test_heartbeat_reports_a_lost_lease(db: Database) -> None:
    job_id = db.enqueue()
    assert db.claim("w1") is not None
    db.expire_lease(job_id)
    assert _requeue(db) == 1
    taken = db.claim("w2", lease=300)
    assert taken is not None
    beat = db.rpc("heartbeat_job", job_id=job_id, worker_id="w1", lease_seconds=900)
    assert len(beat) == 1
    assert beat[0]["locked_by"] == "w2"
    assert db.job(job_id)["locked_until"] == taken["locked_until"]  # w2's lease untouched


def test_heartbeat_of_an_unknown_job_returns_nothing(db: Database) -> None:
    assert db.rpc("heartbeat_job", job_id=uuid.uuid4(), worker_id="w1") == []


def test_release_gives_the_attempt_back(db: Database) -> None:
    job_id = db.enqueue()
    assert db.claim("w1") is not None
    assert db.rpc("release_job", job_id=job_id, worker_id="w2") == []  # not its job
    assert db.job(job_id)["status"] == "processing"
    rows = db.rpc("release_job", job_id=job_id, worker_id="w1")
    assert len(rows) == 1
    row = db.job(job_id)
    assert row["status"] == "pending"
    assert row["attempt_number"] == 0
    assert row["locked_by"] is None and row["locked_until"] is None
    again = db.claim("w2")
    assert again is not None and again["id"] == job_id and again["attempt_number"] == 1


def test_requeue_returns_expired_leases_and_requeues_the_generation(db: Database) -> None:
    _, gen, job_id = _generation_job(db, status="processing")
    live = db.enqueue()
    assert db.claim("w9") is not None
    db.expire_lease(job_id)
    assert _requeue(db) == 1
    row = db.job(job_id)
    assert row["status"] == "pending"
    assert row["locked_by"] is None and row["locked_until"] is None
    assert row["attempt_number"] == 1  # the abandoned attempt counts
    assert db.generation(gen)["status"] == "queued"
    assert db.job(live)["status"] == "processing"  # a live lease is left alone
    assert _requeue(db) == 0


def test_requeue_fails_exhausted_jobs_and_their_generation(db: Database) -> None:
    _, gen, job_id = _generation_job(db, status="downloading", max_attempts=1)
    db.expire_lease(job_id)
    assert _requeue(db) == 1
    row = db.job(job_id)
    assert row["status"] == "failed" and row["completed_at"] is not None
    assert row["error_message"]
    generation = db.generation(gen)
    assert generation["status"] == "failed"
    assert generation["error_message"]


def test_poison_job_cannot_loop(db: Database) -> None:
    job_id = db.enqueue(max_attempts=3)
    for attempt in range(1, 4):
        job = db.claim(f"w{attempt}")
        assert job is not None and job["id"] == job_id and job["attempt_number"] == attempt
        db.expire_lease(job_id)  # the worker died holding it
        assert _requeue(db) == 1
    assert db.job(job_id)["status"] == "failed"
    assert db.claim("w9") is None


@pytest.mark.parametrize(("idle_minutes", "expected"), [(16, "pending"), (5, "processing")])
def test_rows_without_a_lease_use_the_15_minute_rule(
    db: Database, idle_minutes: int, expected: str
) -> None:
    job_id = db.enqueue()
    assert db.claim("w1") is not None
    with db.admin() as conn:
        now = conn.execute("select now() as t").fetchone()
    assert now is not None
    db.backdate("job_queue", job_id, locked_until=None, locked_by=None,
                updated_at=now["t"] - timedelta(minutes=idle_minutes))
    assert _requeue(db) == (1 if expected == "pending" else 0)
    assert db.job(job_id)["status"] == expected


def test_cancel_generation_cancels_pending_and_running_jobs(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user)
    payload = {"generation_id": str(gen), "user_id": str(user)}
    running = db.enqueue(payload=payload)
    assert db.claim("w1") is not None
    pending = db.enqueue("download-image", payload=payload)
    other = db.enqueue(payload={"generation_id": str(uuid.uuid4())})
    with db.as_role("authenticated", user) as conn:
        row = conn.execute("select * from public.cancel_generation(%s)", (gen,)).fetchone()
    assert row is not None and row["status"] == "cancelled"
    assert db.job(running)["status"] == "cancelled"
    assert db.job(pending)["status"] == "cancelled"
    assert db.job(other)["status"] == "pending"
    assert db.claim("w2", job_types=["download-image"]) is None


def test_requeued_jobs_become_suspects_that_only_an_idle_claim_takes(db: Database) -> None:
    poison = db.enqueue(priority=5)
    bystander = db.enqueue()
    assert db.claim("w1") is not None  # the poison job, by priority
    db.expire_lease(poison)  # its worker died holding it
    assert _requeue(db) == 1
    details = db.job(poison)["error_details"]
    assert "lease_expired_at" in details
    assert "stopped responding" in db.job(poison)["error_message"]
    # A busy worker asks without suspects: it gets the bystander, never the poison job.
    busy = db.rpc("claim_jobs", limit=5, job_types=None, worker_id="w2", lease_seconds=60,
                  exclude_suspects=True)
    assert [r["id"] for r in busy] == [bystander]
    # An idle worker asks with suspects allowed and gets it (and then runs it alone).
    idle = db.rpc("claim_jobs", limit=1, job_types=None, worker_id="w3", lease_seconds=60)
    assert [r["id"] for r in idle] == [poison]
