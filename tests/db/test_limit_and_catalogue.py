"""Every door counts against the in-flight limit, and the catalogue decides what runs
(issue 11 points 2 and 3)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.db.dbkit import FLUX, Database, named_call

SDXL = "stability-ai/sdxl"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
USER_INSERT = ("insert into public.image_generations (user_id, prompt, model, width, height,"
               " steps, guidance_scale, status) values (%s, 'p', %s, 1024, 1024, 4, 0, 'pending')")


def _door(db: Database, door: str, user: uuid.UUID) -> str | None:
    """One new generation through a door; the SQLSTATE it raised, or None."""
    if door == "user insert":
        return db.attempt("authenticated", user, USER_INSERT, (user, FLUX))[0]
    if door == "service-role insert":
        return db.attempt("service_role", None, USER_INSERT, (user, FLUX))[0]
    if door == "request_generation":
        query, params = named_call("request_generation", request={"prompt": "p", "model_id": FLUX})
        return db.attempt("authenticated", user, query, params)[0]
    query, params = named_call("create_generation", user_id=user,
                               generation={"prompt": "p", "model": "FLUX Schnell"},
                               payload={"model_id": FLUX}, max_in_flight=100)
    return db.attempt("service_role", None, query, params)[0]


DOORS = ["user insert", "service-role insert", "request_generation", "create_generation"]


@pytest.mark.parametrize("door", DOORS)
def test_every_door_counts_against_the_limit(db: Database, door: str) -> None:
    db.set_in_flight_limit(3)
    user = db.make_user()
    db.make_generation(user, "processing")
    db.make_generation(user, "downloading")
    assert _door(db, door, user) is None
    assert _door(db, door, user) == "PT429"
    # A door of another kind is held to the same count.
    other = DOORS[(DOORS.index(door) + 1) % len(DOORS)]
    assert _door(db, other, user) == "PT429"
    assert db.scalar("select count(*) from public.image_generations where user_id = %s",
                     (user,)) == 3


def test_what_counts_as_in_flight(db: Database) -> None:
    db.set_in_flight_limit(2)
    user = db.make_user()
    for status in ("completed", "failed", "cancelled"):
        db.make_generation(user, status)
    stale = db.make_generation(user, "pending")  # a legacy row its client never started
    db.backdate("image_generations", stale, updated_at=datetime.now(UTC) - timedelta(hours=2))
    assert _door(db, "user insert", user) is None
    assert _door(db, "user insert", user) is None
    assert _door(db, "user insert", user) == "PT429"
    # Another user has slots of their own; finishing one frees a slot.
    assert _door(db, "user insert", db.make_user()) is None
    with db.admin() as conn:
        conn.execute("update public.image_generations set status = 'cancelled'"
                     " where user_id = %s and status = 'pending' and id <> %s", (user, stale))
    assert _door(db, "user insert", user) is None


def test_the_limit_message_names_the_setting(db: Database) -> None:
    db.set_in_flight_limit(1)
    user = db.make_user()
    assert _door(db, "user insert", user) is None
    with pytest.raises(psycopg.Error) as caught, db.as_role("authenticated", user) as conn:
        conn.execute(USER_INSERT.encode(), (user, FLUX))
    assert caught.value.sqlstate == "PT429"
    assert "Too many generations in progress (1 of 1 allowed)" in str(caught.value)
    assert "max_in_flight_per_user" in (caught.value.diag.message_hint or "")


def test_zero_means_no_limit(db: Database) -> None:
    db.set_in_flight_limit(0)
    user = db.make_user()
    for _ in range(12):
        assert _door(db, "user insert", user) is None


@pytest.mark.parametrize("door", ["user insert", "request_generation"])
def test_two_concurrent_requests_cannot_both_take_the_last_slot(db: Database, door: str) -> None:
    db.set_in_flight_limit(1)
    user = db.make_user()
    outcome: dict[str, Any] = {}
    first_in = threading.Event()
    release = threading.Event()

    def first() -> None:
        with db.as_role("authenticated", user) as conn:
            if door == "user insert":
                conn.execute(USER_INSERT.encode(), (user, FLUX))
            else:
                conn.execute(*named_call("request_generation",
                                         request={"prompt": "p", "model_id": FLUX}))
            first_in.set()
            release.wait(10)  # hold the transaction (and the user's lock) open

    def second() -> None:
        outcome["second"] = _door(db, door, user)

    racer = threading.Thread(target=first)
    waiting = threading.Thread(target=second)
    racer.start()
    try:
        assert first_in.wait(10)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive(), "the second request did not wait for the first"
    finally:
        release.set()
        racer.join(10)
        if waiting.is_alive() or waiting.ident is not None:
            waiting.join(10)
    assert outcome == {"second": "PT429"}
    assert db.scalar("select count(*) from public.image_generations where user_id = %s",
                     (user,)) == 1


# -- the catalogue decides what runs ------------------------------------------------------------
@pytest.mark.parametrize(("payload", "expected", "field"), [
    ({"model_id": FLUX}, None, None),
    ({"model_id": FLUX, "model_version": None}, None, None),
    ({"model_id": FLUX, "model_version": ""}, None, None),
    ({"model_id": SDXL, "model_version": SDXL_VERSION}, None, None),
    ({}, "22023", "model_id"),
    ({"model_id": "attacker/model"}, "22023", "model_id"),
    ({"model_id": "test/retired"}, "22023", "model_id"),
    ({"model_id": FLUX, "model_version": SDXL_VERSION}, "22023", "model_version"),
    ({"model_id": SDXL, "model_version": "attacker/model:" + "0" * 64}, "22023", "model_version"),
    ({"model_id": SDXL, "model_version": SDXL_VERSION.upper()}, "22023", "model_version"),
])
@pytest.mark.parametrize("caller", ["service_role", "service_role with a user's sub"])
def test_enqueue_job_checks_generate_image_against_the_catalogue(
    db: Database, payload: dict[str, Any], expected: str | None, field: str | None, caller: str
) -> None:
    with db.admin() as conn:
        conn.execute("insert into public.models (name, replicate_id, is_active)"
                     " values ('Retired', 'test/retired', false)")
    sub = db.make_user() if "sub" in caller else None
    query, params = named_call("enqueue_job", job_type="generate-image", payload=payload)
    with db.as_role("service_role", sub) as conn:
        if expected is None:
            job_id = conn.execute(query, params).fetchone()
        else:
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(query, params)
    if expected is not None:
        assert caught.value.sqlstate == expected
        assert field is not None and field in str(caught.value)
        assert db.scalar("select count(*) from public.job_queue") == 0
        return
    assert job_id is not None
    stored = db.job(job_id["enqueue_job"])["payload"]
    catalogue = SDXL_VERSION if payload["model_id"] == SDXL else None
    assert stored["model_version"] == catalogue  # a missing version is the catalogue's


def test_other_job_types_are_not_catalogue_checked(db: Database) -> None:
    db.enqueue("download-image", payload={"generation_id": str(uuid.uuid4())})
    db.enqueue("process-webhook", payload={"prediction_id": "p"})
    assert db.scalar("select count(*) from public.job_queue") == 2


def test_catalogue_model_is_the_workers_check(db: Database) -> None:
    rows = db.rpc("catalogue_model", model_id=SDXL, model_version=SDXL_VERSION)
    assert rows[0]["replicate_id"] == SDXL and rows[0]["version"] == SDXL_VERSION
    assert db.rpc("catalogue_model", model_id=SDXL)[0]["name"] == "SDXL"
    state, _ = db.attempt("service_role", None,
                          "select * from public.catalogue_model(%s, %s)", (FLUX, SDXL_VERSION))
    assert state == "22023"
    for role, sub in (("authenticated", db.make_user()), ("anon", None)):
        state, _ = db.attempt(role, sub, "select * from public.catalogue_model(%s)", (FLUX,))
        assert state == "42501"
