"""What a signed-in user may write through PostgREST, and nothing more (issue 11, point 1/8).

Each case runs as PostgREST would run it (``authenticator`` switching to the JWT's role) and
states the SQLSTATE the database answers (None: it succeeds).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import sql

from tests.db.dbkit import FLUX, Database

LEGACY = {  # the legacy synchronous clients' own insert (issue 11 point 8)
    "prompt": "a red fox", "negative_prompt": "blurry", "model": FLUX,
    "width": 1024, "height": 1024, "steps": 4, "guidance_scale": 0, "status": "pending",
}
OLD = datetime(2000, 1, 1, tzinfo=UTC)


def _insert(columns: dict[str, Any]) -> tuple[sql.Composed, list[Any]]:
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    marks = sql.SQL(", ").join(sql.Placeholder() * len(columns))
    query = sql.SQL("insert into public.image_generations ({}) values ({}) returning *").format(
        names, marks
    )
    return query, list(columns.values())


def _update(table: str, values: dict[str, Any], row_id: uuid.UUID) -> tuple[sql.Composed, list[Any]]:
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in values
    )
    query = sql.SQL("update public.{} set {} where id = {} returning *").format(
        sql.Identifier(table), sets, sql.Placeholder()
    )
    return query, [*values.values(), row_id]


# -- INSERT ----------------------------------------------------------------------------------
INSERTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("legacy insert", {}, None),
    ("legacy insert with style", {"style": "photo"}, None),
    ("model by catalogue name", {"model": "FLUX Schnell"}, None),
    ("status left out", {"status": None}, None),
    ("no sizes (legacy rows had none)", {"width": None, "height": None, "steps": None}, None),
    ("forged prediction id", {"replicate_prediction_id": "victims-prediction"}, "42501"),
    ("forged status processing", {"status": "processing"}, "42501"),
    ("forged status completed", {"status": "completed"}, "42501"),
    ("forged updated_at", {"updated_at": OLD}, "42501"),
    ("forged created_at", {"created_at": OLD}, "42501"),
    ("forged job_id", {"job_id": uuid.uuid4()}, "42501"),
    ("forged generation_time_seconds", {"generation_time_seconds": 1}, "42501"),
    ("forged error_message", {"error_message": "x"}, "42501"),
    ("forged completed_at", {"completed_at": OLD}, "42501"),
    ("chosen id", {"id": uuid.uuid4()}, "42501"),
    ("unknown model", {"model": "attacker/model"}, "22023"),
    ("no model", {"model": None}, "22023"),
    ("inactive model", {"model": "test/retired"}, "22023"),
    ("width too large", {"width": 100_000}, "22023"),
    ("height too small", {"height": 64}, "22023"),
    ("steps zero", {"steps": 0}, "22023"),
    ("steps too many", {"steps": 1000}, "22023"),
    ("guidance too large", {"guidance_scale": 99}, "22023"),
    ("negative guidance", {"guidance_scale": -1}, "22023"),
    ("blank prompt", {"prompt": "  "}, "22023"),
    ("prompt too long", {"prompt": "x" * 2001}, "22023"),
    ("negative prompt too long", {"negative_prompt": "x" * 2001}, "22023"),
    ("style too long", {"style": "x" * 201}, "22023"),
]


@pytest.mark.parametrize(("columns", "expected"), [c[1:] for c in INSERTS],
                         ids=[c[0] for c in INSERTS])
def test_user_insert(db: Database, columns: dict[str, Any], expected: str | None) -> None:
    with db.admin() as conn:
        conn.execute("insert into public.models (name, replicate_id, is_active)"
                     " values ('Retired', 'test/retired', false)")
    user = db.make_user()
    row = {"user_id": user, **LEGACY, **columns}
    row = {k: v for k, v in row.items() if v is not None or k in ("model",)}
    state, rows = db.attempt("authenticated", user, *_insert(row))
    assert state == expected
    count = db.scalar("select count(*) from public.image_generations where user_id = %s", (user,))
    assert count == (1 if expected is None else 0)
    if expected is None:
        assert rows[0]["status"] == "pending" and rows[0]["replicate_prediction_id"] is None
        assert rows[0]["updated_at"] > datetime.now(UTC) - timedelta(minutes=1)


def test_user_inserts_only_for_themselves(db: Database) -> None:
    alice, bob = db.make_user(), db.make_user()
    state, _ = db.attempt("authenticated", alice, *_insert({"user_id": bob, **LEGACY}))
    assert state == "42501"
    state, _ = db.attempt("anon", None, *_insert({"user_id": bob, **LEGACY}))
    assert state == "42501"
    assert db.scalar("select count(*) from public.image_generations") == 0


@pytest.mark.parametrize(("columns", "expected"), [
    ({}, None),
    ({"status": "processing", "replicate_prediction_id": "p-1"}, None),  # the server may
    ({"model": "attacker/model"}, "22023"),
    ({"width": 100_000}, "22023"),
    ({"prompt": "x" * 5000}, "22023"),
])
def test_service_role_insert_meets_the_catalogue_and_bounds(
    db: Database, columns: dict[str, Any], expected: str | None
) -> None:
    """The original Deno start-generation inserts with the service-role client."""
    user = db.make_user()
    state, _ = db.attempt("service_role", None, *_insert({"user_id": user, **LEGACY, **columns}))
    assert state == expected


# -- UPDATE of a generation ----------------------------------------------------------------------
UPDATES: list[tuple[str, dict[str, Any], str | None]] = [
    ("cancel", {"status": "cancelled"}, None),
    ("legacy error path", {"status": "failed", "error_message": "model error",
                           "completed_at": OLD}, None),
    ("cancel with a forged updated_at", {"status": "cancelled", "updated_at": OLD}, None),
    ("complete it", {"status": "completed"}, "42501"),
    ("back to queued", {"status": "queued"}, "42501"),
    ("to processing", {"status": "processing"}, "42501"),
    ("only an error message", {"error_message": "x"}, "42501"),
    ("error message too long", {"status": "failed", "error_message": "x" * 1001}, "22023"),
    ("forged prediction id", {"replicate_prediction_id": "victims-prediction"}, "42501"),
    ("forged job_id", {"job_id": uuid.uuid4()}, "42501"),
    ("forged generation time", {"generation_time_seconds": 3}, "42501"),
    ("another model", {"model": "stability-ai/sdxl"}, "42501"),
    ("bigger", {"width": 2048}, "42501"),
    ("another prompt", {"prompt": "x"}, "42501"),
    ("give it away", {"user_id": uuid.uuid4()}, "42501"),
]


@pytest.mark.parametrize("status", ["pending", "queued", "processing", "downloading"])
@pytest.mark.parametrize(("values", "expected"), [u[1:] for u in UPDATES],
                         ids=[u[0] for u in UPDATES])
def test_user_update_of_an_unfinished_generation(
    db: Database, status: str, values: dict[str, Any], expected: str | None
) -> None:
    user = db.make_user()
    gen = db.make_generation(user, status)
    before = db.generation(gen)
    state, rows = db.attempt("authenticated", user, *_update("image_generations", values, gen))
    assert state == expected
    after = db.generation(gen)
    if expected is not None:
        assert after == before
        return
    assert len(rows) == 1 and after["status"] == values["status"]
    # The server's clock, whatever the client sent.
    assert after["completed_at"] > datetime.now(UTC) - timedelta(minutes=1)
    assert after["updated_at"] > datetime.now(UTC) - timedelta(minutes=1)
    assert after["error_message"] == values.get("error_message", before["error_message"])


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_finished_generations_are_not_the_users_to_change(db: Database, status: str) -> None:
    user = db.make_user()
    gen = db.make_generation(user, status)
    before = db.generation(gen)
    for values in ({"status": "cancelled"}, {"status": "failed", "error_message": "x"}):
        state, rows = db.attempt("authenticated", user, *_update("image_generations", values, gen))
        assert (state, rows) == (None, [])  # RLS: no row to update
    assert db.generation(gen) == before


def test_users_cannot_touch_another_users_generation(db: Database) -> None:
    alice, bob = db.make_user(), db.make_user()
    gen = db.make_generation(bob, "processing")
    state, rows = db.attempt("authenticated", alice,
                             *_update("image_generations", {"status": "cancelled"}, gen))
    assert (state, rows) == (None, [])
    state, rows = db.attempt("authenticated", alice,
                             "delete from public.image_generations where id = %s returning id",
                             (gen,))
    assert (state, rows) == (None, [])
    assert db.generation(gen)["status"] == "processing"


# -- UPDATE of a job (the shared library's cancelJob) -----------------------------------------------
CANCEL_JOB = ("update public.job_queue set status = 'cancelled', updated_at = now()"
              " where id = %s and status = 'pending' returning *")


def _job_for(db: Database, user: uuid.UUID, job_type: str = "generate-image",
             status: str = "queued") -> tuple[uuid.UUID, uuid.UUID]:
    gen = db.make_generation(user, status)
    job = db.enqueue(job_type, payload={"generation_id": str(gen), "user_id": str(user)})
    return gen, job


def test_cancel_job_as_the_shared_library_sends_it(db: Database) -> None:
    user = db.make_user()
    gen, job = _job_for(db, user)
    db.backdate("job_queue", job, updated_at=OLD)
    state, rows = db.attempt("authenticated", user, CANCEL_JOB, (job,))
    assert state is None and len(rows) == 1
    row = db.job(job)
    assert row["status"] == "cancelled"
    assert row["updated_at"] > datetime.now(UTC) - timedelta(minutes=1)
    assert row["completed_at"] is not None
    # Its generation is cancelled with it: it would otherwise stay queued for ever and hold a
    # slot of the user's in-flight limit.
    assert db.generation(gen)["status"] == "cancelled"


@pytest.mark.parametrize(("statement", "expected"), [
    ("update public.job_queue set status = 'completed' where id = %s", "42501"),
    ("update public.job_queue set status = 'failed' where id = %s", "42501"),
    ("update public.job_queue set priority = 100 where id = %s", "42501"),
    ("update public.job_queue set payload = '{}' where id = %s", "42501"),
    ("update public.job_queue set scheduled_at = now() where id = %s", "42501"),
    ("update public.job_queue set created_by = null where id = %s", "42501"),
    ("update public.job_queue set updated_at = now() where id = %s", "42501"),
    ("delete from public.job_queue where id = %s", "42501"),
])
def test_other_job_writes_are_refused(db: Database, statement: str, expected: str) -> None:
    user = db.make_user()
    _, job = _job_for(db, user)
    before = db.job(job)
    state, _ = db.attempt("authenticated", user, statement, (job,))
    assert state == expected
    assert db.job(job) == before


@pytest.mark.parametrize("case", ["processing", "another user's", "process-webhook"])
def test_cancel_job_leaves_what_is_not_a_users_pending_job(db: Database, case: str) -> None:
    alice, bob = db.make_user(), db.make_user()
    owner = bob if case == "another user's" else alice
    if case == "process-webhook":  # e.g. the cancel of a prediction (its money)
        job = db.enqueue("process-webhook", payload={"prediction_id": "p", "cancel": True,
                                                     "user_id": str(owner)})
    else:
        _, job = _job_for(db, owner)
        if case == "processing":
            assert db.claim() is not None
    before = db.job(job)
    state, rows = db.attempt("authenticated", alice, CANCEL_JOB.replace(
        " and status = 'pending'", ""), (job,))
    assert (state, rows) == (None, [])
    assert db.job(job) == before
