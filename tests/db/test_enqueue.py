"""enqueue_job: created_by attribution and dedupe keys."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.db.dbkit import FLUX, Database, named_call


def test_enqueue_defaults(db: Database) -> None:
    job_id = db.enqueue("download-image", payload={"k": "v"})
    row = db.job(job_id)
    assert row["job_type"] == "download-image"
    assert row["payload"] == {"k": "v"}
    assert row["status"] == "pending"
    assert (row["priority"], row["attempt_number"], row["max_attempts"]) == (0, 0, 3)
    assert row["scheduled_at"] == row["created_at"]  # due at once
    assert row["created_by"] is None and row["dedupe_key"] is None


def test_enqueue_rejects_an_unknown_job_type(db: Database) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.enqueue("mine-bitcoin")


def test_created_by_is_the_calling_user(db: Database) -> None:
    caller, other = db.make_user(), db.make_user()
    query, params = named_call("enqueue_job", job_type="generate-image",
                               payload={"user_id": str(other), "model_id": FLUX})
    with db.as_role("service_role", caller) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    assert db.job(row["enqueue_job"])["created_by"] == caller


def test_created_by_falls_back_to_the_payload_user(db: Database) -> None:
    user = db.make_user()
    job_id = db.enqueue(payload={"user_id": str(user).upper()})
    assert db.job(job_id)["created_by"] == user


@pytest.mark.parametrize("user_id", ["not-a-uuid", str(uuid.uuid4()), "", None, 42])
def test_created_by_is_null_for_a_non_user(db: Database, user_id: object) -> None:
    job_id = db.enqueue(payload={"user_id": user_id})
    assert db.job(job_id)["created_by"] is None


def test_dedupe_key_returns_the_live_job(db: Database) -> None:
    first = db.enqueue("download-image", payload={"n": 1}, dedupe_key="download:g1")
    second = db.enqueue("download-image", payload={"n": 2}, dedupe_key="download:g1")
    assert second == first
    assert db.claim("w1") is not None  # processing is still live
    assert db.enqueue("download-image", dedupe_key="download:g1") == first
    other = db.enqueue("download-image", dedupe_key="download:g2")
    assert other != first
    assert db.scalar("select count(*) from public.job_queue where dedupe_key = 'download:g1'") == 1


def test_dedupe_key_is_free_again_after_the_job_finished(db: Database) -> None:
    first = db.enqueue("download-image", dedupe_key="download:g1")
    assert db.claim("w1") is not None
    db.rpc("complete_job", job_id=first, result={"ok": True}, worker_id="w1")
    second = db.enqueue("download-image", dedupe_key="download:g1")
    assert second != first
    assert db.job(second)["status"] == "pending"


def test_concurrent_duplicates_collapse_to_one_job(db: Database) -> None:
    start = threading.Barrier(6)

    def enqueue(_i: int) -> uuid.UUID:
        start.wait(timeout=30)
        return db.enqueue("download-image", dedupe_key="download:race")

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(enqueue, range(6)))
    assert len(ids) == 1
    assert db.scalar("select count(*) from public.job_queue") == 1
