"""Issue 11 points 1-3, replayed through /rest/v1 with a signed-up user's JWT.

Every attack is refused with a clear 4xx carrying the database's SQLSTATE, or (for rows the
user cannot see) changes no row; either way nothing is stored, nothing is paid at the
provider, and the response leaks neither the victim's data nor a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError

from devstack.stack import StackState
from tests.functions.conftest import User
from tests.security.conftest import (
    FLUX,
    LEGACY_ROW,
    SDXL,
    SDXL_VERSION,
    Ledger,
    Rest,
    assert_refused,
    victim_generation,
)

OLD = datetime(2000, 1, 1, tzinfo=UTC).isoformat()


@dataclass(frozen=True)
class Scene:
    me: User
    victim_id: str
    rest: Rest
    victim_gen: str
    victim_prediction: str
    my_pending: str
    my_completed: str
    my_job: str


@pytest.fixture
def scene(stack_state: StackState, admin_conn: psycopg.Connection, attacker: User,
          victim: User) -> Scene:
    prediction = f"victim-{uuid.uuid4().hex[:12]}"
    victim_gen = victim_generation(admin_conn, victim, "completed", prediction)
    rest = Rest(stack_state, attacker.token)
    created = rest.request("POST", "image_generations",
                           json_body={"user_id": attacker.id, **LEGACY_ROW})
    assert created.status_code == 201, created.text
    my_pending = created.json()[0]["id"]
    row = admin_conn.execute(
        "insert into public.image_generations (user_id, prompt, model, status)"
        " values (%s, 'done', %s, 'completed') returning id::text", (attacker.id, FLUX),
    ).fetchone()
    assert row is not None
    job = admin_conn.execute(
        "select public.enqueue_job('generate-image', jsonb_build_object('generation_id', %s::text,"
        " 'user_id', %s::text, 'model_id', %s::text))::text",
        (my_pending, attacker.id, FLUX),
    ).fetchone()
    assert job is not None
    return Scene(attacker, victim.id, rest, victim_gen, prediction, my_pending, str(row[0]),
                 str(job[0]))


Attack = Callable[[Scene], httpx.Response]


def _insert(extra: dict[str, Any], **kwargs: Any) -> Attack:
    def run(s: Scene) -> httpx.Response:
        row = {"user_id": s.me.id, **LEGACY_ROW, **extra}
        row = {k: (s.victim_prediction if v == "<victim prediction>" else v)
               for k, v in row.items()}
        return s.rest.request("POST", "image_generations", json_body=row, **kwargs)
    return run


def _patch(target: str, values: dict[str, Any], table: str = "image_generations") -> Attack:
    def run(s: Scene) -> httpx.Response:
        row_id = {"mine": s.my_pending, "my completed": s.my_completed,
                  "victim's": s.victim_gen, "my job": s.my_job}[target]
        values_ = {k: (s.victim_prediction if v == "<victim prediction>" else v)
                   for k, v in values.items()}
        return s.rest.request("PATCH", table, json_body=values_, params={"id": f"eq.{row_id}"})
    return run


def _rpc(name: str, args: Callable[[Scene], dict[str, Any]]) -> Attack:
    def run(s: Scene) -> httpx.Response:
        return s.rest.request("POST", f"rpc/{name}", json_body=args(s))
    return run


# (attack, how it is answered: HTTP status, SQLSTATE, a word the message holds)
REFUSED: dict[str, tuple[Attack, int, str, str]] = {
    # point 1: forged columns on insert
    "insert with the victim's prediction id": (
        _insert({"replicate_prediction_id": "<victim prediction>"}), 403, "42501", "permission"),
    "insert a processing row with an old updated_at": (
        _insert({"status": "processing", "updated_at": OLD}), 403, "42501", "permission"),
    "insert a processing row": (_insert({"status": "processing"}), 403, "42501", "pending"),
    "insert a completed row": (_insert({"status": "completed"}), 403, "42501", "pending"),
    "insert a job_id": (_insert({"job_id": str(uuid.uuid4())}), 403, "42501", "permission"),
    "insert a generation time": (
        _insert({"generation_time_seconds": 0.1}), 403, "42501", "permission"),
    "insert a chosen id": (_insert({"id": str(uuid.uuid4())}), 403, "42501", "permission"),
    "insert an enormous size": (_insert({"width": 100_000, "height": 100_000}), 400, "22023",
                                "width"),
    "insert zero steps": (_insert({"steps": 0}), 400, "22023", "steps"),
    "insert a model outside the catalogue": (
        _insert({"model": "attacker/model"}), 400, "22023", "Unknown model"),
    "insert a prompt past the cap": (_insert({"prompt": "x" * 5000}), 400, "22023", "prompt"),
    "insert for the victim": (
        lambda s: s.rest.request("POST", "image_generations",
                                 json_body={**LEGACY_ROW, "user_id": s.victim_id}),
        403, "42501", "own"),
    "bulk insert hiding one forged row": (
        lambda s: s.rest.request("POST", "image_generations", json_body=[
            {"user_id": s.me.id, **LEGACY_ROW},
            {"user_id": s.me.id, **LEGACY_ROW, "replicate_prediction_id": s.victim_prediction},
        ]), 403, "42501", "permission"),
    "upsert over the victim's row": (
        lambda s: s.rest.request(
            "POST", "image_generations",
            json_body={"id": s.victim_gen, "user_id": s.me.id, **LEGACY_ROW},
            prefer="return=representation,resolution=merge-duplicates"),
        403, "42501", "permission"),
    "insert naming a forged column in columns=": (
        lambda s: s.rest.request(
            "POST", "image_generations",
            json_body=[{"user_id": s.me.id, **LEGACY_ROW,
                        "replicate_prediction_id": s.victim_prediction}],
            params={"columns": "user_id,prompt,model,status,replicate_prediction_id"}),
        403, "42501", "permission"),
    # point 1: forged columns on update
    "patch in the victim's prediction id": (
        _patch("mine", {"replicate_prediction_id": "<victim prediction>"}), 403, "42501",
        "permission"),
    "patch to processing with an old updated_at": (
        _patch("mine", {"status": "processing", "updated_at": OLD}), 403, "42501", "cancelled"),
    "patch to completed": (_patch("mine", {"status": "completed"}), 403, "42501", "cancelled"),
    "patch the size": (_patch("mine", {"width": 2048}), 403, "42501", "permission"),
    "patch the model": (_patch("mine", {"model": SDXL}), 403, "42501", "permission"),
    "patch the owner": (_patch("mine", {"user_id": str(uuid.uuid4())}), 403, "42501",
                        "permission"),
    "patch a huge error message": (
        _patch("mine", {"status": "failed", "error_message": "x" * 100_000}), 400, "22023",
        "error_message"),
    # the queue and the other tables
    "patch a job to completed": (
        _patch("my job", {"status": "completed"}, "job_queue"), 403, "42501", "cancel"),
    "patch a job's priority": (
        _patch("my job", {"priority": 1000}, "job_queue"), 403, "42501", "permission"),
    "insert a job": (
        lambda s: s.rest.request("POST", "job_queue", json_body={
            "job_type": "generate-image", "payload": {"model_id": FLUX}}),
        403, "42501", "permission"),
    "insert an image": (
        lambda s: s.rest.request("POST", "images", json_body={
            "generation_id": s.my_pending, "user_id": s.me.id, "storage_path": "x"}),
        403, "42501", "permission"),
    "read the settings": (
        lambda s: s.rest.request("GET", "picture_settings", params={"select": "*"}),
        403, "42501", "permission"),
    "change the settings": (
        lambda s: s.rest.request("PATCH", "picture_settings",
                                 json_body={"max_in_flight_per_user": 0},
                                 params={"id": "eq.true"}),
        403, "42501", "permission"),
    # the RPCs
    "cancel the victim's generation": (
        _rpc("cancel_generation", lambda s: {"p_generation_id": s.victim_gen}), 404, "PT404",
        "not found"),
    "enqueue a job": (
        _rpc("enqueue_job", lambda s: {"p_job_type": "generate-image",
                                       "p_payload": {"model_id": FLUX}}), 403, "42501",
        "permission"),
    "create a generation for the victim": (
        _rpc("create_generation", lambda s: {
            "p_user_id": s.victim_id, "p_generation": {"prompt": "p", "model": FLUX},
            "p_payload": {"model_id": FLUX}}), 403, "42501", "permission"),
    "lift the limit through create_generation": (
        _rpc("create_generation", lambda s: {
            "p_user_id": s.me.id, "p_generation": {"prompt": "p", "model": FLUX},
            "p_payload": {"model_id": FLUX}, "p_max_in_flight": 10_000}), 403, "42501",
        "permission"),
    "call the safety net": (
        _rpc("enqueue_webhook_checks", lambda s: {}), 403, "42501", "permission"),
    # point 3: the catalogue decides what runs
    "request another model's version": (
        _rpc("request_generation", lambda s: {"p_request": {
            "prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION}}), 400, "22023",
        "model_version"),
    "request an attacker's model as the version": (
        _rpc("request_generation", lambda s: {"p_request": {
            "prompt": "p", "model_id": SDXL, "model_version": "attacker/model:" + "0" * 64}}),
        400, "22023", "model_version"),
    "request a model outside the catalogue": (
        _rpc("request_generation", lambda s: {"p_request": {
            "prompt": "p", "model_id": "attacker/model"}}), 400, "22023", "Unknown model"),
    "request an enormous image": (
        _rpc("request_generation", lambda s: {"p_request": {
            "prompt": "p", "model_id": FLUX, "width": 100_000}}), 400, "22023", "width"),
}

@pytest.mark.parametrize("name", sorted(REFUSED))
def test_attack_is_refused_and_changes_nothing(
    name: str, scene: Scene, ledger: Ledger, stack_state: StackState
) -> None:
    attack, status, code, mentions = REFUSED[name]
    before, paid = ledger.snapshot(), ledger.paid()
    response = attack(scene)
    assert_refused(response, status, code, stack_state, mentions=mentions)
    assert ledger.snapshot() == before
    assert ledger.paid() == paid
    assert scene.victim_prediction not in response.text
    assert "secret prompt" not in response.text


# Rows the user cannot see: PostgREST answers 200 with no row (as for any filter that
# matches nothing); nothing changes, nothing leaks.
UNSEEN: dict[str, Attack] = {
    "cancel the victim's generation by patch": _patch("victim's", {"status": "cancelled"}),
    "mark the victim's generation failed": _patch("victim's", {"status": "failed"}),
    "delete the victim's generation": lambda s: s.rest.request(
        "DELETE", "image_generations", params={"id": f"eq.{s.victim_gen}"}),
    "reopen my completed generation": _patch("my completed", {"status": "cancelled"}),
    "read the victim's generation": lambda s: s.rest.request(
        "GET", "image_generations", params={"id": f"eq.{s.victim_gen}", "select": "*"}),
    "find the victim's prediction": lambda s: s.rest.request(
        "GET", "image_generations",
        params={"replicate_prediction_id": f"eq.{s.victim_prediction}", "select": "id"}),
}


@pytest.mark.parametrize("name", sorted(UNSEEN))
def test_rows_of_others_and_finished_rows_are_out_of_reach(
    name: str, scene: Scene, ledger: Ledger
) -> None:
    before, paid = ledger.snapshot(), ledger.paid()
    response = UNSEEN[name](scene)
    assert response.status_code == 200, response.text
    assert response.json() == []
    assert ledger.snapshot() == before and ledger.paid() == paid


def test_the_forged_row_of_point_1_cannot_reach_the_victims_image(
    scene: Scene, attacker: User, fn_base: str
) -> None:
    """The original attack: a row with the victim's prediction id, then the legacy
    generate-image with that row's id, returned a byte-identical copy of the victim's image.
    The forged row cannot be written, and generate-image refuses the victim's row."""
    forged = _insert({"replicate_prediction_id": "<victim prediction>"})(scene)
    assert forged.status_code == 403
    with pytest.raises(APIError) as caught:
        attacker.client.table("image_generations").insert(
            {"user_id": attacker.id, **LEGACY_ROW, "replicate_prediction_id": scene.victim_prediction}
        ).execute()
    assert caught.value.code == "42501"
    response = httpx.post(f"{fn_base}/generate-image", timeout=30,
                          headers={"Authorization": f"Bearer {attacker.token}"},
                          json={"prompt": "p", "model_id": FLUX,
                                "generation_id": scene.victim_gen})
    assert response.status_code == 400 and "not found" in response.json()["error"].lower()
    assert scene.victim_prediction not in response.text


def test_supabase_py_as_the_user_sees_the_databases_named_errors(
    scene: Scene, attacker: User, ledger: Ledger
) -> None:
    client = attacker.client
    before = ledger.snapshot()
    attempts: list[tuple[Callable[[], Any], str]] = [
        (lambda: client.table("image_generations").insert(
            {"user_id": attacker.id, **LEGACY_ROW, "status": "processing"}).execute(), "42501"),
        (lambda: client.table("image_generations").insert(
            {"user_id": attacker.id, **LEGACY_ROW, "model": "attacker/model"}).execute(),
         "22023"),
        (lambda: client.table("image_generations").update(
            {"replicate_prediction_id": scene.victim_prediction}).eq(
            "id", scene.my_pending).execute(), "42501"),
        (lambda: client.table("image_generations").update({"status": "completed"}).eq(
            "id", scene.my_pending).execute(), "42501"),
        (lambda: client.rpc("cancel_generation", {"p_generation_id": scene.victim_gen}).execute(),
         "PT404"),
        (lambda: client.rpc("request_generation", {"p_request": {
            "prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION}}).execute(), "22023"),
    ]
    for attempt, code in attempts:
        with pytest.raises(APIError) as caught:
            attempt()
        assert caught.value.code == code, caught.value
        assert caught.value.message
    assert ledger.snapshot() == before


def test_the_limit_is_the_databases_whatever_the_door(
    scene: Scene, attacker: User, admin_conn: psycopg.Connection, limit_of: Callable[[int], None],
    stack_state: StackState, fn_base: str,
) -> None:
    """Point 2's limit, at every door a user reaches: REST insert, request_generation,
    start-generation (the scene already holds one pending row of the attacker's)."""
    limit_of(3)
    rest = scene.rest
    assert rest.request("POST", "image_generations",
                        json_body={"user_id": attacker.id, **LEGACY_ROW}).status_code == 201
    ok = rest.request("POST", "rpc/request_generation",
                      json_body={"p_request": {"prompt": "p", "model_id": FLUX}})
    assert ok.status_code == 200, ok.text
    refused = [
        rest.request("POST", "image_generations", json_body={"user_id": attacker.id, **LEGACY_ROW}),
        rest.request("POST", "rpc/request_generation",
                     json_body={"p_request": {"prompt": "p", "model_id": FLUX}}),
    ]
    for response in refused:
        assert_refused(response, 429, "PT429", stack_state, mentions="too many")
    door = httpx.post(f"{fn_base}/start-generation", timeout=30,
                      headers={"Authorization": f"Bearer {attacker.token}"},
                      json={"prompt": "p", "model_id": FLUX})
    assert door.status_code == 429 and "too many" in door.json()["error"].lower()
    count = admin_conn.execute(
        "select count(*) from public.image_generations where user_id = %s and status in"
        " ('pending', 'queued')", (attacker.id,)).fetchone()
    assert count is not None and count[0] == 3
