"""The rules every writer of image_generations meets: stopping work, finished stays finished,
images only for wanted generations (issue 11 points 1, 2 and 7)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.db.dbkit import Database

UNFINISHED = ("pending", "queued", "processing", "downloading")


def _with_prediction(db: Database, gen: uuid.UUID, prediction: str) -> None:
    with db.admin() as conn:
        conn.execute("update public.image_generations set replicate_prediction_id = %s"
                     " where id = %s", (prediction, gen))


def _cancel_jobs(db: Database, prediction: str) -> list[dict[str, object]]:
    with db.admin() as conn:
        rows = conn.execute(
            "select job_type, payload, dedupe_key, status, created_by from public.job_queue"
            " where dedupe_key = %s", (f"cancel:{prediction}",)
        ).fetchall()
    return [dict(r) for r in rows]


# -- a user's cancel, failure mark or delete stops the work ---------------------------------------
USER_STOPS = {
    "cancel": ("update public.image_generations set status = 'cancelled' where id = %s", None),
    "web cancel": ("update public.image_generations set status = 'cancelled'"
                   " where id = %s and status = 'pending'", None),
    "failure mark": ("update public.image_generations set status = 'failed',"
                     " error_message = 'client gave up', completed_at = now() where id = %s", None),
    "delete": ("delete from public.image_generations where id = %s", None),
}


@pytest.mark.parametrize("how", sorted(USER_STOPS))
def test_a_users_stop_cancels_the_pending_job(db: Database, how: str) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "pending")
    job = db.enqueue(payload={"generation_id": str(gen), "user_id": str(user)})
    state, _ = db.attempt("authenticated", user, USER_STOPS[how][0], (gen,))
    assert state is None
    assert db.job(job)["status"] == "cancelled"
    assert db.claim() is None  # nothing left to run (or pay for)


@pytest.mark.parametrize("how", ["cancel", "failure mark", "delete"])
def test_a_running_job_learns_of_the_stop_at_its_heartbeat(db: Database, how: str) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "processing")
    job = db.enqueue(payload={"generation_id": str(gen), "user_id": str(user)})
    assert db.claim("w1") is not None
    _with_prediction(db, gen, "pred-polling")
    state, _ = db.attempt("authenticated", user, USER_STOPS[how][0], (gen,))
    assert state is None
    beat = db.service("select * from public.heartbeat_job(%s, 'w1', 300)", (job,))
    assert beat[0]["status"] == "cancelled"
    # The job holds the prediction: the worker cancels it; no second cancel is queued.
    assert _cancel_jobs(db, "pred-polling") == []


@pytest.mark.parametrize("how", ["cancel", "failure mark", "delete"])
@pytest.mark.parametrize("status", ["queued", "processing"])
def test_a_prediction_no_job_holds_is_cancelled_at_the_provider(
    db: Database, how: str, status: str
) -> None:
    """Webhook mode (processing), or a retry waiting (queued): no job holds the prediction."""
    user = db.make_user()
    gen = db.make_generation(user, status)
    _with_prediction(db, gen, f"pred-{how}-{status}")
    state, _ = db.attempt("authenticated", user, USER_STOPS[how][0], (gen,))
    assert state is None
    (cancel,) = _cancel_jobs(db, f"pred-{how}-{status}")
    assert cancel["job_type"] == "process-webhook" and cancel["status"] == "pending"
    assert cancel["payload"] == {"prediction_id": f"pred-{how}-{status}", "cancel": True,
                                 "user_id": str(user)}
    assert cancel["created_by"] == user


def test_cancel_generation_rpc_uses_the_same_mechanism(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "processing")
    _with_prediction(db, gen, "pred-rpc")
    state, _ = db.attempt("authenticated", user, "select public.cancel_generation(%s)", (gen,))
    assert state is None
    assert [c["status"] for c in _cancel_jobs(db, "pred-rpc")] == ["pending"]
    # A second cancel changes nothing (deduplicated, and the generation is finished).
    db.attempt("authenticated", user, "select public.cancel_generation(%s)", (gen,))
    assert len(_cancel_jobs(db, "pred-rpc")) == 1


def test_the_workers_failure_mark_does_not_cancel_the_prediction(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "processing")
    _with_prediction(db, gen, "pred-worker")
    state, _ = db.attempt("service_role", None,
                          "update public.image_generations set status = 'failed' where id = %s",
                          (gen,))
    assert state is None
    assert _cancel_jobs(db, "pred-worker") == []


def test_deleting_a_finished_generation_enqueues_nothing(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "completed")
    _with_prediction(db, gen, "pred-done")
    state, _ = db.attempt("authenticated", user,
                          "delete from public.image_generations where id = %s", (gen,))
    assert state is None
    assert _cancel_jobs(db, "pred-done") == []


# -- finished stays finished ------------------------------------------------------------------------
@pytest.mark.parametrize(("finished", "later"), [
    (finished, later)
    for finished in ("completed", "failed", "cancelled")
    for later in ("pending", "queued", "processing", "downloading", "completed", "failed",
                  "cancelled")
    if later != finished
])
def test_the_server_never_moves_a_finished_generation(
    db: Database, finished: str, later: str
) -> None:
    user = db.make_user()
    gen = db.make_generation(user, finished)
    state, _ = db.attempt("service_role", None,
                          "update public.image_generations set status = %s where id = %s",
                          (later, gen))
    assert state == "PT409"
    assert db.generation(gen)["status"] == finished


def test_the_workers_filtered_update_skips_a_finished_generation(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "failed")
    state, rows = db.attempt(
        "service_role", None,
        "update public.image_generations set status = 'completed' where id = %s"
        " and status not in ('cancelled', 'completed', 'failed') returning id", (gen,))
    assert (state, rows) == (None, [])


def test_the_server_moves_unfinished_generations_freely(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "pending")
    for status in ("queued", "processing", "queued", "processing", "downloading", "queued",
                   "processing", "downloading", "completed"):
        state, _ = db.attempt("service_role", None,
                              "update public.image_generations set status = %s where id = %s",
                              (status, gen))
        assert state is None, status


@pytest.mark.parametrize("finished", ["failed", "cancelled"])
def test_retry_jobs_is_the_escape(db: Database, finished: str) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "queued")
    job = db.enqueue(payload={"generation_id": str(gen), "user_id": str(user)})
    with db.admin() as conn:
        conn.execute("update public.job_queue set status = %s where id = %s", (finished, job))
        conn.execute("update public.image_generations set status = %s where id = %s",
                     (finished, gen))
    n = db.rpc("retry_jobs", job_id=job, include_cancelled=True)[0]["retry_jobs"]
    assert n == 1
    assert db.generation(gen)["status"] == "queued"
    # The escape lasts only for retry_jobs' own work, not for the rest of the request.
    with db.as_role("service_role") as conn:
        conn.execute("select public.retry_jobs(p_job_type => 'cleanup-storage')")
        conn.execute("update public.image_generations set status = 'completed' where id = %s",
                     (gen,))
    state, _ = db.attempt("service_role", None,
                          "update public.image_generations set status = 'queued' where id = %s",
                          (gen,))
    assert state == "PT409"


# -- images only for wanted generations; storing one completes it -----------------------------------
IMAGE = ("insert into public.images (generation_id, user_id, storage_path, format)"
         " values (%s, %s, 'x/y.webp', 'webp')")


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_no_image_for_a_generation_given_up(db: Database, status: str) -> None:
    user = db.make_user()
    gen = db.make_generation(user, status)
    state, _ = db.attempt("service_role", None, IMAGE, (gen, user))
    assert state == "PT410"
    assert db.scalar("select count(*) from public.images") == 0


def test_no_image_for_a_deleted_generation(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "downloading")
    with db.admin() as conn:
        conn.execute("delete from public.image_generations where id = %s", (gen,))
    state, _ = db.attempt("service_role", None, IMAGE, (gen, user))
    assert state == "PT410"


@pytest.mark.parametrize("status", UNFINISHED)
def test_storing_the_image_completes_the_generation(db: Database, status: str) -> None:
    user = db.make_user()
    gen = db.make_generation(user, status)
    state, _ = db.attempt("service_role", None, IMAGE, (gen, user))
    assert state is None
    row = db.generation(gen)
    assert row["status"] == "completed" and row["completed_at"] is not None


def test_a_cancel_racing_the_image_insert_waits_and_finds_it_completed(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user, "downloading")
    with db.as_role("service_role") as worker:
        worker.execute(IMAGE.encode(), (gen, user))
        # The user's cancel arrives while the worker's transaction is open: it waits for the
        # generation's row lock, then finds the generation completed and changes nothing.
        with pytest.raises(psycopg.errors.LockNotAvailable), \
                db.as_role("authenticated", user) as conn:
            conn.execute("set local lock_timeout = '200ms'")
            conn.execute("update public.image_generations set status = 'cancelled'"
                         " where id = %s", (gen,))
    state, rows = db.attempt("authenticated", user,
                             "update public.image_generations set status = 'cancelled'"
                             " where id = %s returning id", (gen,))
    assert (state, rows) == (None, [])
    assert db.generation(gen)["status"] == "completed"
