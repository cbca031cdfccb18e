"""The edge-function contracts of SPEC section 5, end to end against the local stack.

Every endpoint is called over HTTP (httpx, and supabase-py's ``functions.invoke``, the
client path the apps use); the rows behind each answer are read back with a superuser
connection.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from supabase_functions.errors import FunctionsHttpError

from devstack.stack import StackState
from tests.functions.conftest import FLUX, Functions, User, counts, sign_up
from tests.support import Fake

CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
}
STARTED = "Image generation started. You will be notified when complete."


def assert_cors(response: httpx.Response) -> None:
    for name, value in CORS.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))


def assert_error(response: httpx.Response, status: int, contains: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert contains.lower() in body["error"].lower(), body
    assert "Traceback" not in response.text
    assert_cors(response)
    return dict(body)


def row(conn: psycopg.Connection, query: str, *params: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(query.encode(), params).fetchone()
    assert found is not None, query
    return dict(found)


@pytest.fixture
def fake(stack_state: StackState) -> Iterator[Fake]:
    f = Fake(stack_state)
    f.reset()
    yield f
    f.reset()


@pytest.fixture
def quiet_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    """process-jobs claims whatever is due: start these tests from an empty queue."""
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")
    yield
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")


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


def test_catalogue_without_defaults_uses_global_defaults_and_id_segment(
    fn: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    model_id = f"test-owner/bare-model-{uuid.uuid4().hex[:8]}"
    admin_conn.execute(
        "insert into public.models (name, replicate_id, is_active) values ('', %s, true)",
        (model_id,),
    )
    try:
        data = fn.post("start-generation", user.token,
                       json={"prompt": "p", "model_id": model_id, "model_version": "abc123"}).json()
        gen = row(admin_conn, "select * from public.image_generations where id = %s",
                  data["generation_id"])
        job = row(admin_conn, "select payload from public.job_queue where id = %s",
                  data["job_id"])
    finally:
        admin_conn.execute("delete from public.models where replicate_id = %s", (model_id,))
    assert gen["model"] == model_id.split("/")[1]
    assert (gen["width"], gen["height"], gen["steps"]) == (1024, 1024, 30)
    assert float(gen["guidance_scale"]) == 7.5
    assert job["payload"]["model_version"] == "abc123"


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
    assert caught.value.message == "Unknown model: nobody/nothing"


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
    standalone: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
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
    standalone: Functions, user: User, admin_conn: psycopg.Connection
) -> None:
    body = {"prompt": "p", "model_id": FLUX}
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(
            lambda _: standalone.post("start-generation", user.token, json=body).status_code,
            range(8),
        ))
    assert codes == [200, 200] + [429] * 6
    assert counts(admin_conn, user.id) == (2, 2)


def test_users_cannot_call_the_rpc_directly(user: User) -> None:
    from postgrest.exceptions import APIError

    with pytest.raises(APIError):
        user.client.rpc("create_generation", {
            "p_user_id": user.id, "p_generation": {"prompt": "p"}, "p_payload": {},
            "p_max_in_flight": 100,
        }).execute()


# -- process-jobs ------------------------------------------------------------------------------
def _generation(conn: psycopg.Connection, gid: str) -> dict[str, Any]:
    return row(conn, "select * from public.image_generations where id = %s", gid)


def test_process_jobs_runs_up_to_three_jobs_inline(
    standalone: Functions, stack_state: StackState, user: User, other_user: User,
    admin_conn: psycopg.Connection, fake: Fake, quiet_queue: None,
) -> None:
    gids = [
        standalone.post("start-generation", u.token,
                        json={"prompt": f"p{i}", "model_id": FLUX}).json()["generation_id"]
        for u in (user, other_user) for i in range(2)
    ]
    anon = stack_state.keys.anon_key

    def process(**kwargs: Any) -> dict[str, Any]:
        response = standalone.post("process-jobs", anon, timeout=120, **kwargs)
        assert response.status_code == 200, response.text
        assert_cors(response)
        return dict(response.json())

    first = process(json={})  # the seed's pg_cron body
    assert first == {"success": True, "processed": 3, "errors": 0,
                     "message": "Processed 3 job(s) with 0 error(s)"}
    states = sorted(_generation(admin_conn, g)["status"] for g in gids)
    assert states == ["downloading", "downloading", "downloading", "queued"]
    done = row(admin_conn, "select count(*) as n, min(result::text) as r from public.job_queue"
               " where job_type = 'generate-image' and status = 'completed'"
               " and payload ->> 'generation_id' = any(%s)", gids)
    assert done["n"] == 3 and "prediction_id" in done["r"]

    second = process()  # no body at all, like curl -X POST
    assert (second["processed"], second["errors"]) == (3, 0)  # the downloads (priority 1)
    totals = [process() for _ in range(3)]
    assert [t["processed"] for t in totals] == [1, 1, 0]
    assert totals[-1]["message"] == "Processed 0 job(s) with 0 error(s)"
    for gid in gids:
        gen = _generation(admin_conn, gid)
        assert gen["status"] == "completed", gen
        image = row(admin_conn, "select * from public.images where generation_id = %s", gid)
        assert image["storage_path"] == f"{gen['user_id']}/{gid}.webp"
        assert httpx.get(image["public_url"], timeout=10).content[:4] == b"RIFF"
    assert fake.stats()  # the fake Replicate served them


def test_process_jobs_counts_errors(
    standalone: Functions, stack_state: StackState, user: User,
    admin_conn: psycopg.Connection, fake: Fake, quiet_queue: None,
) -> None:
    gid = standalone.post("start-generation", user.token,
                          json={"prompt": "[fail] a cat", "model_id": FLUX}).json()["generation_id"]
    response = standalone.post("process-jobs", user.token, timeout=120)  # a user JWT is fine
    assert response.json() == {"success": True, "processed": 1, "errors": 1,
                               "message": "Processed 1 job(s) with 1 error(s)"}
    gen = _generation(admin_conn, gid)
    assert gen["status"] == "failed" and gen["error_message"]


@pytest.mark.parametrize("token", ["", "garbage", "sb_secret_nope"])
def test_process_jobs_requires_a_project_jwt(standalone: Functions, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(standalone.url("process-jobs"), headers=headers, json={}, timeout=10)
    assert_error(response, 401)


# -- process-generation ----------------------------------------------------------------------
def test_process_generation_runs_one_prediction(
    standalone: Functions, stack_state: StackState, fake: Fake
) -> None:
    response = standalone.post(
        "process-generation", stack_state.keys.service_role_key, timeout=120,
        json={"prompt": "a red fox", "model_id": FLUX, "width": 1344, "height": 768},
    )
    assert response.status_code == 200, response.text
    assert_cors(response)
    data = response.json()
    assert set(data) == {"success", "output_url", "format", "width", "height",
                         "generation_time_seconds"}
    assert data["success"] is True
    assert data["format"] == "webp"
    assert (data["width"], data["height"]) == (1820, 1024)  # 16:9, 1024 on the short side
    assert data["output_url"].startswith(stack_state.replicate_url.removesuffix("/v1"))
    assert isinstance(data["generation_time_seconds"], float)
    assert httpx.get(data["output_url"], timeout=10).status_code == 200


def test_process_generation_reports_failures(
    standalone: Functions, stack_state: StackState, fake: Fake
) -> None:
    key = stack_state.keys.service_role_key
    for body, message in (({"model_id": FLUX}, "prompt"),
                          ({"prompt": "[fail] x", "model_id": FLUX}, "failed")):
        response = standalone.post("process-generation", key, json=body, timeout=120)
        assert response.status_code == 400, response.text
        data = response.json()
        assert data["success"] is False and message in data["error"].lower(), data
        assert_cors(response)


def test_process_generation_is_service_role_only(
    standalone: Functions, stack_state: StackState, user: User
) -> None:
    for token in (stack_state.keys.anon_key, user.token, "sb_secret_guess"):
        response = standalone.post("process-generation", token,
                                   json={"prompt": "p", "model_id": FLUX})
        assert response.status_code == 401
        assert response.json()["success"] is False
        assert_cors(response)


# -- generate-image (legacy, synchronous) ------------------------------------------------------
@pytest.fixture
def queue_processor(
    standalone: Functions, stack_state: StackState, quiet_queue: None
) -> Iterator[None]:
    """Someone must work the queue while generate-image waits: process-jobs, called in a loop
    from a helper thread (what pg_cron did for the original, only faster)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                processed = standalone.post("process-jobs", stack_state.keys.anon_key,
                                            timeout=120).json().get("processed", 0)
            except httpx.HTTPError:
                processed = 0
            if not processed:
                stop.wait(0.2)

    thread = threading.Thread(target=loop, name="process-jobs-loop", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(130)


def test_generate_image_returns_the_url(
    standalone: Functions, user: User, admin_conn: psycopg.Connection,
    fake: Fake, queue_processor: None,
) -> None:
    response = standalone.post("generate-image", user.token, timeout=90,
                               json={"prompt": "a lighthouse", "model_id": FLUX})
    assert response.status_code == 200, response.text
    assert_cors(response)
    data = response.json()
    assert set(data) == {"success", "url", "format", "generation_time"}
    assert data["success"] is True and data["format"] == "webp"
    assert isinstance(data["generation_time"], float) and data["generation_time"] > 0
    assert httpx.get(data["url"], timeout=10).content[:4] == b"RIFF"
    image = row(admin_conn, "select * from public.images where public_url = %s", data["url"])
    assert str(image["user_id"]) == user.id


def test_generate_image_with_a_client_created_row_returns_the_image(
    standalone: Functions, user: User, other_user: User, admin_conn: psycopg.Connection,
    fake: Fake, queue_processor: None,
) -> None:
    # The original API: the app inserts a pending row itself (RLS allows its own), then calls.
    created = user.client.table("image_generations").insert(
        {"user_id": user.id, "prompt": "draft", "status": "pending"}
    ).execute().data[0]
    gid = created["id"]
    assert_error(standalone.post("generate-image", other_user.token, timeout=30,
                                 json={"prompt": "p", "model_id": FLUX, "generation_id": gid}),
                 400, "not found")

    response = standalone.post("generate-image", user.token, timeout=90,
                               json={"prompt": "a harbour", "model_id": FLUX,
                                     "generation_id": gid, "width": 768, "height": 768})
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == {"success", "image", "generation_time"}
    image = data["image"]
    assert image["generation_id"] == gid and image["user_id"] == user.id
    # flux-schnell takes aspect ratios only: 1:1 is rendered 1024 x 1024.
    assert (image["width"], image["height"], image["format"]) == (1024, 1024, "webp")
    assert image["storage_path"] == f"{user.id}/{gid}.webp"
    assert image["prompt"] == "a harbour"
    gen = _generation(admin_conn, gid)
    assert gen["status"] == "completed" and gen["job_id"] is not None
    again = standalone.post("generate-image", user.token, timeout=30,
                            json={"prompt": "p", "model_id": FLUX, "generation_id": gid})
    assert_error(again, 400, "already completed")


def test_generate_image_reports_a_failed_generation(
    standalone: Functions, user: User, fake: Fake, queue_processor: None
) -> None:
    response = standalone.post("generate-image", user.token, timeout=90,
                               json={"prompt": "[nsfw] a cat", "model_id": FLUX})
    assert_error(response, 400, "nsfw")


def test_generate_image_times_out_with_504(
    stack_state: StackState, user: User, admin_conn: psycopg.Connection,
    tmp_path: Any, quiet_queue: None,
) -> None:
    from tests.functions.conftest import serve_functions

    with serve_functions(stack_state, tmp_path / "fn.log",
                         FUNCTIONS_GENERATE_TIMEOUT="1") as short:
        started = time.monotonic()
        response = short.post("generate-image", user.token, timeout=30,
                              json={"prompt": "p", "model_id": FLUX})
        elapsed = time.monotonic() - started
    body = assert_error(response, 504, "background")
    assert 1.0 <= elapsed < 10
    assert _generation(admin_conn, body["generation_id"])["status"] == "queued"


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


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SUPABASE_URL": None}, "SUPABASE_URL: required but not set"),
        ({"SUPABASE_URL": "ftp://x"}, "SUPABASE_URL: must be an http(s) URL"),
        ({"SUPABASE_SERVICE_ROLE_KEY": None}, "SUPABASE_SERVICE_ROLE_KEY: required but not set"),
        ({"FUNCTIONS_MAX_IN_FLIGHT": "-1"}, "FUNCTIONS_MAX_IN_FLIGHT"),
        ({"FUNCTIONS_MAX_PROMPT_CHARS": "many"}, "FUNCTIONS_MAX_PROMPT_CHARS"),
        ({"FUNCTIONS_GENERATE_TIMEOUT": "0"}, "FUNCTIONS_GENERATE_TIMEOUT"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"REPLICATE_API_BASE_URL": "replicate"}, "REPLICATE_API_BASE_URL"),
    ],
)
def test_bad_configuration_names_the_variable(
    stack_state: StackState, change: dict[str, str | None], message: str
) -> None:
    from functions_compat.app import create_app
    from worker.errors import ConfigError

    env = {**stack_state.env(), **change}
    with pytest.raises(ConfigError) as caught:
        create_app({k: v for k, v in env.items() if v is not None})
    assert message in caught.value.message
    assert stack_state.keys.service_role_key not in caught.value.message


def test_the_cli_refuses_to_start_with_a_bad_variable(stack_state: StackState) -> None:
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "FUNCTIONS_"))}
    env.update({**stack_state.env(), "FUNCTIONS_MAX_IN_FLIGHT": "lots"})
    done = subprocess.run(
        [sys.executable, "-m", "worker", "functions", "--host", "127.0.0.1", "--port", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "configuration error: FUNCTIONS_MAX_IN_FLIGHT" in done.stderr


def test_without_replicate_only_the_worker_endpoints_are_unavailable(
    stack_state: StackState, user: User
) -> None:
    import asyncio

    from functions_compat.app import create_app

    env = {k: v for k, v in stack_state.env().items() if not k.startswith("REPLICATE_")}
    app = create_app(env)

    async def call(name: str, token: str, body: dict[str, Any]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            return await client.post(f"/{name}", json=body,
                                     headers={"Authorization": f"Bearer {token}"})

    jobs = asyncio.run(call("process-jobs", stack_state.keys.anon_key, {}))
    assert_error(jobs, 500, "process-jobs is not configured: REPLICATE_API_TOKEN")
    started = asyncio.run(call("start-generation", user.token, {"prompt": "p", "model_id": FLUX}))
    assert started.status_code == 200, started.text
