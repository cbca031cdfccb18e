"""The edge-function contracts of SPEC section 5 (routing, CORS, start-generation), end to
end against the local stack.

Every endpoint is called over HTTP (httpx, and supabase-py's ``functions.invoke``, the
client path the apps use); the rows behind each answer are read back with a superuser
connection. The worker-backed endpoints are in ``test_contract_jobs.py``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from supabase_functions.errors import FunctionsHttpError

from devstack.stack import StackState
from tests.functions.conftest import (
    FLUX,
    Functions,
    User,
    assert_cors,
    assert_error,
    counts,
    row,
    sign_up,
)

STARTED = "Image generation started. You will be notified when complete."


# -- CORS and routing ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["start-generation", "process-jobs", "process-generation", "generate-image", "nope"]
)
def test_options_preflight_answers_ok_with_cors(fn: Functions, name: str) -> None:
    response = httpx.options(
        fn.url(name),
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.text == "ok"
    assert_cors(response)


def test_other_methods_are_405_json(fn: Functions, user: User) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(
            method, fn.url("start-generation"), headers={"Authorization": f"Bearer {user.token}"}
        )
        assert_error(response, 405, "not allowed")


def test_unknown_function_is_404_json(fn: Functions, user: User) -> None:
    assert_error(fn.post("no-such-function", user.token, json={}), 404, "not found")


def test_standalone_serves_both_url_layouts(standalone: Functions, user: User) -> None:
    root = standalone.base.removesuffix("/functions/v1")
    for url in (f"{root}/start-generation", f"{standalone.base}/start-generation"):
        response = httpx.post(url, json={"prompt": "p"}, timeout=10)  # no token
        assert_error(response, 401, "authorization")


# -- start-generation: success ------------------------------------------------------------
def test_start_generation_queues_a_generation(
    fn: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    body = {
        "prompt": "  a lighthouse at dawn  ",
        "model_id": FLUX,
        "width": 1344,
        "height": 768,
        "seed": 42,
        "negative_prompt": "blurry",
        "style": "photo",
        "unknown_field": {"ignored": True},
    }
    response = fn.post("start-generation", user.token, json=body)
    assert response.status_code == 200, response.text
    assert_cors(response)
    data = response.json()
    assert set(data) == {"success", "generation_id", "job_id", "status", "message"}
    assert data["success"] is True
    assert data["status"] == "queued"
    assert data["message"] == STARTED
    gid, job_id = data["generation_id"], data["job_id"]
    uuid.UUID(gid), uuid.UUID(job_id)

    gen = row(admin_conn, "select * from public.image_generations where id = %s", gid)
    assert gen["user_id"] == uuid.UUID(user.id)
    assert gen["status"] == "queued"
    assert gen["job_id"] == uuid.UUID(job_id)
    assert gen["prompt"] == "a lighthouse at dawn"
    assert gen["negative_prompt"] == "blurry"
    assert gen["model"] == "FLUX Schnell"
    assert gen["style"] == "photo"
    assert (gen["width"], gen["height"]) == (1344, 768)
    assert gen["steps"] == 4  # the model's default_steps
    assert float(gen["guidance_scale"]) == 7.5  # the model has none: the global default

    job = row(admin_conn, "select * from public.job_queue where id = %s", job_id)
    assert job["job_type"] == "generate-image"
    assert job["status"] == "pending"
    assert job["created_by"] == uuid.UUID(user.id)
    assert job["attempt_number"] == 0
    assert job["payload"] == {
        "generation_id": gid,
        "user_id": user.id,
        "prompt": "a lighthouse at dawn",
        "negative_prompt": "blurry",
        "model_id": FLUX,
        "model_version": None,
        "width": 1344,
        "height": 768,
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "seed": 42,
        "source_image_url": None,
        "strength": None,
    }


def test_model_defaults_and_version_come_from_the_catalogue(
    fn: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    data = fn.post(
        "start-generation", user.token, json={"prompt": "p", "model_id": "stability-ai/sdxl"}
    ).json()
    gen = row(admin_conn, "select * from public.image_generations where id = %s",
              data["generation_id"])
    job = row(admin_conn, "select payload from public.job_queue where id = %s", data["job_id"])
    assert gen["model"] == "SDXL"
    assert (gen["width"], gen["height"], gen["steps"]) == (1024, 1024, 30)
    assert float(gen["guidance_scale"]) == 7.5
    assert job["payload"]["model_version"] == (
        "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
    )
    assert job["payload"]["num_inference_steps"] == 30


def test_catalogue_without_defaults_uses_global_defaults_and_the_replicate_id(
    fn: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    model_id = f"test-owner/bare-model-{uuid.uuid4().hex[:8]}"
    admin_conn.execute(
        "insert into public.models (name, replicate_id, is_active) values ('', %s, true)",
        (model_id,),
    )
    try:
        before = counts(admin_conn, user.id)
        # The catalogue has no version for it: a client's version is not run (issue 11 point 3).
        forged = fn.post("start-generation", user.token,
                         json={"prompt": "p", "model_id": model_id, "model_version": "abc123"})
        assert_error(forged, 400, "model_version")
        assert counts(admin_conn, user.id) == before
        data = fn.post("start-generation", user.token,
                       json={"prompt": "p", "model_id": model_id}).json()
        gen = row(admin_conn, "select * from public.image_generations where id = %s",
                  data["generation_id"])
        job = row(admin_conn, "select payload from public.job_queue where id = %s",
                  data["job_id"])
    finally:
        admin_conn.execute("update public.image_generations set status = 'cancelled'"
                           " where user_id = %s and status = 'queued'", (user.id,))
        admin_conn.execute("delete from public.models where replicate_id = %s", (model_id,))
    # Without a name, the model column holds the replicate_id (a catalogue key; the
    # database accepts only a model that names one active catalogue row).
    assert gen["model"] == model_id
    assert (gen["width"], gen["height"], gen["steps"]) == (1024, 1024, 30)
    assert float(gen["guidance_scale"]) == 7.5
    assert job["payload"]["model_version"] is None


@pytest.mark.parametrize("version", [
    "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",  # sdxl's
    "attacker/model:" + "0" * 64,
])
def test_a_model_version_not_the_catalogues_is_400(
    fn: Functions, user: User, admin_conn: psycopg.Connection, version: str
) -> None:
    before = counts(admin_conn, user.id)
    response = fn.post("start-generation", user.token,
                       json={"prompt": "p", "model_id": FLUX, "model_version": version})
    error = assert_error(response, 400, "model_version")
    assert "catalogue" in error["error"]
    assert counts(admin_conn, user.id) == before


def test_numeric_strings_are_accepted(
    fn: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    body = {"prompt": "p", "model_id": FLUX, "width": "512", "height": " 768 ",
            "guidance_scale": "3.5", "num_inference_steps": "4.0", "strength": None}
    data = fn.post("start-generation", user.token, json=body).json()
    gen = row(admin_conn, "select * from public.image_generations where id = %s",
              data["generation_id"])
    assert (gen["width"], gen["height"], gen["steps"]) == (512, 768, 4)
    assert float(gen["guidance_scale"]) == 3.5


def test_supabase_py_invoke_starts_a_generation(
    user: User, admin_conn: psycopg.Connection
) -> None:
    # The client path of the apps: the signed-in client's functions.invoke.
    as_json = user.client.functions.invoke(
        "start-generation", {"body": {"prompt": "p", "model_id": FLUX}, "responseType": "json"}
    )
    assert isinstance(as_json, dict) and as_json["success"] is True
    raw = user.client.functions.invoke("start-generation",
                                       {"body": {"prompt": "q", "model_id": FLUX}})
    assert isinstance(raw, bytes)
    decoded = json.loads(raw)
    assert decoded["status"] == "queued" and decoded["message"] == STARTED
    for gid in (as_json["generation_id"], decoded["generation_id"]):
        gen = row(admin_conn, "select user_id, status from public.image_generations where id = %s",
                  gid)
        assert gen == {"user_id": uuid.UUID(user.id), "status": "queued"}


def test_supabase_py_invoke_surfaces_the_error_message(user: User) -> None:
    with pytest.raises(FunctionsHttpError) as caught:
        user.client.functions.invoke(
            "start-generation", {"body": {"prompt": "p", "model_id": "nobody/nothing"}}
        )
    assert caught.value.status == 400
    assert caught.value.message.startswith("Unknown model: nobody/nothing")


# -- start-generation: rejections ---------------------------------------------------------
BAD_BODIES: list[tuple[Any, str]] = [
    ({"model_id": FLUX}, "prompt"),
    ({"prompt": "   ", "model_id": FLUX}, "prompt"),
    ({"prompt": 5, "model_id": FLUX}, "prompt"),
    ({"prompt": "p"}, "model_id"),
    ({"prompt": "p", "model_id": ["x"]}, "model_id"),
    ({"prompt": "x" * 2001, "model_id": FLUX}, "too long"),
    ({"prompt": "p", "negative_prompt": "n" * 2001, "model_id": FLUX}, "too long"),
    ({"prompt": "a\u0000b", "model_id": FLUX}, "control"),
    ({"prompt": "p", "model_id": FLUX, "width": 255}, "width"),
    ({"prompt": "p", "model_id": FLUX, "height": 2049}, "height"),
    ({"prompt": "p", "model_id": FLUX, "width": 1000.5}, "whole number"),
    ({"prompt": "p", "model_id": FLUX, "width": True}, "width"),
    ({"prompt": "p", "model_id": FLUX, "width": "wide"}, "width"),
    ({"prompt": "p", "model_id": FLUX, "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "p", "model_id": FLUX, "num_inference_steps": 101}, "num_inference_steps"),
    ({"prompt": "p", "model_id": FLUX, "guidance_scale": -0.1}, "guidance_scale"),
    ({"prompt": "p", "model_id": FLUX, "guidance_scale": 30.01}, "guidance_scale"),
    ({"prompt": "p", "model_id": FLUX, "seed": -1}, "seed"),
    ({"prompt": "p", "model_id": FLUX, "seed": 2**31}, "seed"),
    ({"prompt": "p", "model_id": FLUX, "strength": 1.5}, "strength"),
    ({"prompt": "p", "model_id": FLUX, "source_image_url": "http://replicate.delivery/a.png",
      "strength": 0.5}, "source_image_url"),
    ({"prompt": "p", "model_id": FLUX, "source_image_url": "https://evil.example/a.png",
      "strength": 0.5}, "source_image_url"),
    ({"prompt": "p", "model_id": FLUX, "source_image_url": "https://u:p@x.supabase.co/a.png"},
     "source_image_url"),
    ({"prompt": "p", "model_id": "nobody/nothing"}, "Unknown model: nobody/nothing"),
    ([{"prompt": "p"}], "JSON object"),
    ("just a string", "JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_bodies_are_400_and_create_nothing(
    fn: Functions, user: User, admin_conn: psycopg.Connection, body: Any, message: str
) -> None:
    before = counts(admin_conn, user.id)
    assert_error(fn.post("start-generation", user.token, json=body), 400, message)
    assert counts(admin_conn, user.id) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "JSON object"), (b"{not json", "Invalid JSON"), (b'{"prompt": NaN}', "Invalid JSON"),
     (b"\xff\xfe", "Invalid JSON"), (b"[" * 100_000, "Invalid JSON")],
)
def test_unparsable_bodies_are_400(
    fn: Functions, user: User, admin_conn: psycopg.Connection, content: bytes, message: str
) -> None:
    before = counts(admin_conn, user.id)
    response = fn.post("start-generation", user.token, content=content,
                       headers={"Content-Type": "application/json"})
    assert_error(response, 400, message)
    assert counts(admin_conn, user.id) == before


def test_oversized_body_is_413(fn: Functions, user: User) -> None:
    body = {"prompt": "p", "model_id": FLUX, "junk": "x" * 300_000}
    assert_error(fn.post("start-generation", user.token, json=body), 413, "too large")


def test_inactive_model_is_unknown(
    fn: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    model_id = f"test-owner/retired-{uuid.uuid4().hex[:8]}"
    admin_conn.execute(
        "insert into public.models (name, replicate_id, is_active) values ('Old', %s, false)",
        (model_id,),
    )
    try:
        before = counts(admin_conn, user.id)
        response = fn.post("start-generation", user.token,
                           json={"prompt": "p", "model_id": model_id})
        assert_error(response, 400, f"Unknown model: {model_id}")
        assert counts(admin_conn, user.id) == before
    finally:
        admin_conn.execute("delete from public.models where replicate_id = %s", (model_id,))


@pytest.mark.parametrize("case", ["missing", "garbage", "anon", "service", "basic", "sb_key"])
def test_start_generation_without_a_user_token_is_401(
    fn: Functions, stack_state: StackState, user: User, admin_conn: psycopg.Connection,
    case: str,
) -> None:
    headers = {
        "missing": {},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "anon": {"Authorization": f"Bearer {stack_state.keys.anon_key}"},
        "service": {"Authorization": f"Bearer {stack_state.keys.service_role_key}"},
        "basic": {"Authorization": f"Basic {user.token}"},
        "sb_key": {"Authorization": "Bearer sb_publishable_abc123"},
    }[case]
    before = counts(admin_conn, user.id)
    response = httpx.post(fn.url("start-generation"), headers=headers,
                          json={"prompt": "p", "model_id": FLUX})
    assert_error(response, 401)
    assert counts(admin_conn, user.id) == before


def test_expired_token_is_401(
    fn: Functions, stack_state: StackState, user: User
) -> None:
    now = int(time.time())
    token = stack_state.keys.sign({"sub": user.id, "role": "authenticated",
                                   "aud": "authenticated", "iat": now - 7200, "exp": now - 60})
    assert_error(fn.post("start-generation", token, json={"prompt": "p", "model_id": FLUX}),
                 401, "expired")


# -- the per-user limit ---------------------------------------------------------------------
def test_too_many_in_flight_is_429_until_one_finishes(
    standalone: Functions, user: User, admin_conn: psycopg.Connection,
    limit_of: Callable[[int], None],
) -> None:
    limit_of(2)
    body = {"prompt": "p", "model_id": FLUX}
    first = standalone.post("start-generation", user.token, json=body).json()
    second = standalone.post("start-generation", user.token, json=body).json()
    assert first["success"] and second["success"]
    before = counts(admin_conn, user.id)
    error = assert_error(standalone.post("start-generation", user.token, json=body), 429,
                         "too many")
    assert "2" in error["error"]
    assert counts(admin_conn, user.id) == before
    admin_conn.execute("update public.image_generations set status = 'completed' where id = %s",
                       (first["generation_id"],))
    assert standalone.post("start-generation", user.token, json=body).status_code == 200


def test_the_limit_holds_under_concurrent_requests(
    standalone: Functions, user: User, admin_conn: psycopg.Connection,
    limit_of: Callable[[int], None],
) -> None:
    limit_of(2)
    body = {"prompt": "p", "model_id": FLUX}
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(
            lambda _: standalone.post("start-generation", user.token, json=body).status_code,
            range(8),
        ))
    assert codes == [200, 200] + [429] * 6
    assert counts(admin_conn, user.id) == (2, 2)


def test_create_generation_serialises_a_users_requests(
    stack_state: StackState, user: User, admin_conn: psycopg.Connection,
    limit_of: Callable[[int], None],
) -> None:
    """Two transactions race for the last slot: the second waits for the first (advisory
    lock) and then sees its row, so it is refused instead of both getting in. (The limit is
    the database's; the old p_max_in_flight argument is ignored.)"""
    limit_of(1)
    dsn = f"host=127.0.0.1 port={stack_state.pg_port} user=supabase_admin dbname=postgres"
    call = "select public.create_generation(%s, %s::jsonb, %s::jsonb, 100)"
    args = (user.id, json.dumps({"prompt": "race", "model": "FLUX Schnell"}),
            json.dumps({"model_id": FLUX}))
    outcome: dict[str, Any] = {}

    def second() -> None:
        with psycopg.connect(dsn) as conn:
            try:
                conn.execute(call, args)
                conn.commit()
                outcome["result"] = "created"
            except psycopg.Error as exc:
                outcome["result"] = exc.sqlstate

    with psycopg.connect(dsn) as first:
        first.execute(call, args)  # holds the user's lock until commit
        racer = threading.Thread(target=second)
        racer.start()
        racer.join(1.0)
        assert racer.is_alive(), "the second call did not wait for the first transaction"
        first.commit()
    racer.join(10)
    assert outcome == {"result": "PT429"}
    assert counts(admin_conn, user.id) == (1, 1)


def test_users_cannot_call_the_rpc_directly(user: User) -> None:
    from postgrest.exceptions import APIError

    with pytest.raises(APIError):
        user.client.rpc("create_generation", {
            "p_user_id": user.id, "p_generation": {"prompt": "p"}, "p_payload": {},
            "p_max_in_flight": 100,
        }).execute()


def test_supabase_js_style_headers_are_accepted(
    stack_state: StackState, fn: Functions, admin_conn: psycopg.Connection
) -> None:
    # Raw HTTP as supabase-js sends it: apikey + Bearer session, x-client-info, JSON body.
    u = sign_up(stack_state)
    try:
        response = httpx.post(fn.url("start-generation"), json={"prompt": "p", "model_id": FLUX},
                              headers={"apikey": stack_state.keys.anon_key,
                                       "Authorization": f"Bearer {u.token}",
                                       "x-client-info": "supabase-js/2.119.0"})
        assert response.status_code == 200, response.text
    finally:
        from tests.functions.conftest import cancel_in_flight

        cancel_in_flight(admin_conn, u.id)
