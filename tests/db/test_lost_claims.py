"""release_lost_claims: a worker whose claim answer was lost hands back the jobs it holds
but does not know (20261204000100_release_lost_claims.sql)."""

from __future__ import annotations

import psycopg
import pytest

from tests.db.dbkit import Database


def test_jobs_held_but_not_known_go_back_with_their_attempt(db: Database) -> None:
    running = db.enqueue()
    lost = db.enqueue()
    other = db.enqueue()
    assert db.claim("w1") is not None  # running: the worker knows it
    assert db.claim("w1") is not None  # lost: the answer never arrived
    assert db.claim("w2") is not None  # another worker's
    released = db.rpc("release_lost_claims", worker_id="w1", known=[running])
    assert [r["id"] for r in released] == [lost]
    row = db.job(lost)
    assert row["status"] == "pending" and row["attempt_number"] == 0
    assert row["locked_by"] is None and row["locked_until"] is None
    assert row["started_at"] is None
    assert db.job(running)["status"] == "processing"
    assert db.job(running)["locked_by"] == "w1"
    assert db.job(other)["locked_by"] == "w2"
    again = db.claim("w3")
    assert again is not None and again["id"] == lost and again["attempt_number"] == 1


def test_nothing_to_release_and_finished_jobs_are_left_alone(db: Database) -> None:
    done = db.enqueue()
    assert db.claim("w1") is not None
    db.rpc("complete_job", job_id=done, result={}, worker_id="w1")
    assert db.rpc("release_lost_claims", worker_id="w1", known=[]) == []
    assert db.rpc("release_lost_claims", worker_id="w1") == []  # p_known defaults to none
    assert db.job(done)["status"] == "completed"


def test_a_null_worker_id_releases_nothing(db: Database) -> None:
    job = db.enqueue()
    db.service("select * from public.claim_next_job()")  # variant G's call: no worker id
    assert db.job(job)["locked_by"] is None
    assert db.rpc("release_lost_claims", worker_id=None, known=[]) == []
    assert db.job(job)["status"] == "processing"


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_only_the_service_role_may_call_it(db: Database, role: str) -> None:
    with db.as_role(role, db.make_user()) as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        conn.execute("select * from public.release_lost_claims('w1', '{}')")
