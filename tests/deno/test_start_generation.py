"""supabase/functions/start-generation/index.ts under real Deno, behind the stack's gateway.

It answers the seed's contract (SPEC section 5) and calls the database only with the
caller's own JWT (``rpc('request_generation', {p_request: body})``): the end-to-end flows of
supabase-py and supabase-js complete with the daemon; its error shapes and CORS match
functions_compat; a user_id in the body is never trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import StackState
from tests.deno.support import SCHNELL, call, invoke_js, new_user
from tests.e2e.conftest import assert_completed_row, assert_ordered_ending_completed, fetch_image
from tests.e2e.test_client_py import assert_observed, run_flow
from tests.e2e.test_seed_client_js import NodeClient
from tests.support import Fake, Picture, running_worker

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("quiet_queue")]

STARTED = "Image generation started. You will be notified when complete."
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
}


def _assert_cors(headers: Any) -> None:
    for name, value in CORS.items():
        assert headers.get(name) == value, (name, dict(headers))


def test_supabase_py_flow_completes_with_the_daemon(
    stack_state: StackState, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.3)
    body = {"prompt": "deno: a lighthouse, python client", "model_id": SCHNELL, "width": 1024,
            "height": 1024}
    app, started, seen, worker = run_flow(stack_state, log_dir, body)
    assert set(started) == {"success", "generation_id", "job_id", "status", "message"}, started
    assert started["message"] == STARTED
    image_row = assert_observed(app, seen, worker)
    assert seen.row["user_id"] == app.user_id and seen.row["model"] == "FLUX Schnell"
    assert image_row["format"] == "webp"


def test_supabase_js_seed_client_completes_with_the_daemon(
    stack_state: StackState, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.3)
    with running_worker(stack_state, log_dir) as worker:
        worker.wait_subscribed()
        client = NodeClient(stack_state)
        try:
            code, doc = client.result(timeout=90)
        finally:
            client.close()
    assert code == 0 and doc["ok"] is True, client.diagnostics()
    invoke = doc["invoke"]
    assert set(invoke) == {"success", "generation_id", "job_id", "status", "message"}, invoke
    assert invoke["success"] is True and invoke["status"] == "queued"
    gid = str(doc["generation_id"])
    assert_ordered_ending_completed(doc["realtime_statuses"])
    image_row = assert_completed_row(doc["row"], str(doc["user_id"]), gid)
    body, _image, _ctype = fetch_image(doc["public_url"])
    assert hashlib.sha256(body).hexdigest() == doc["image"]["sha256"]
    assert image_row["file_size"] == len(body)


def test_the_body_cannot_choose_the_user(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection
) -> None:
    victim = picture.create_user()
    caller, token = new_user(picture, stack_state)
    body = {"prompt": "deno: forged owner", "model_id": SCHNELL, "user_id": victim,
            "generation_id": "00000000-0000-0000-0000-000000000001"}
    response = call(stack_state, "start-generation", token, body)
    assert response.status_code == 200, response.text
    started = response.json()
    row = admin_conn.execute(
        "select g.user_id, j.created_by, j.payload ->> 'user_id' from public.image_generations g"
        " join public.job_queue j on j.id = g.job_id where g.id = %s",
        (started["generation_id"],),
    ).fetchone()
    assert row is not None
    assert [str(v) for v in row] == [caller, caller, caller]
    assert started["generation_id"] != body["generation_id"]


@pytest.mark.parametrize(
    ("name", "body", "content", "status", "message"),
    [
        ("missing prompt", {"model_id": SCHNELL}, None, 400, "prompt"),
        ("unknown model", {"prompt": "x", "model_id": "attacker/model"}, None, 400, "model"),
        ("invalid JSON", None, b'{"prompt": ', 400, "Invalid JSON in request body"),
        ("array body", None, b"[1, 2]", 400, "Request body must be a JSON object"),
        ("empty body", None, b"", 400, "Request body must be a JSON object"),
        ("oversized body", None, b'{"p": "' + b"x" * (257 * 1024) + b'"}', 413,
         "Request body too large"),
    ],
)
def test_bad_requests_get_the_contracts_error_shape(
    stack_state: StackState,
    picture: Picture,
    name: str,
    body: Any,
    content: bytes | None,
    status: int,
    message: str,
) -> None:
    _user, token = new_user(picture, stack_state)
    response = call(stack_state, "start-generation", token, body, content=content)
    assert response.status_code == status, response.text
    doc = response.json()
    assert set(doc) == {"error"} and message.lower() in doc["error"].lower(), doc
    assert "Traceback" not in doc["error"] and "stack" not in doc["error"].lower()
    _assert_cors(response.headers)


def test_only_post_is_served(stack_state: StackState, picture: Picture) -> None:
    _user, token = new_user(picture, stack_state)
    response = call(stack_state, "start-generation", token, method="GET")
    assert response.status_code == 405
    assert response.json() == {"error": "Method GET not allowed; use POST"}
    _assert_cors(response.headers)


@pytest.mark.parametrize("key", ["anon", "service_role"])
def test_api_keys_without_a_user_are_401(stack_state: StackState, key: str) -> None:
    token = stack_state.keys.anon_key if key == "anon" else stack_state.keys.service_role_key
    response = call(stack_state, "start-generation", token, {"prompt": "x", "model_id": SCHNELL})
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "A signed-in user's access token is required"}
    _assert_cors(response.headers)


def test_a_token_of_a_deleted_user_gets_nothing_stored(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection
) -> None:
    user, token = new_user(picture, stack_state)
    admin_conn.execute("delete from auth.users where id = %s", (user,))
    response = call(stack_state, "start-generation", token,
                    {"prompt": "deno: ghost", "model_id": SCHNELL})
    assert response.status_code in (400, 401), response.text
    assert set(response.json()) == {"error"}
    row = admin_conn.execute(
        "select count(*) from public.image_generations where prompt = 'deno: ghost'"
    ).fetchone()
    assert row == (0,)


def test_the_in_flight_limit_answers_429(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection
) -> None:
    user, token = new_user(picture, stack_state)
    accepted = 0
    response = None
    for n in range(60):
        response = call(stack_state, "start-generation", token,
                        {"prompt": f"deno: in flight {n}", "model_id": SCHNELL})
        if response.status_code != 200:
            break
        accepted += 1
    assert response is not None
    assert response.status_code == 429, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]
    _assert_cors(response.headers)
    assert accepted >= 1
    row = admin_conn.execute(
        "select count(*) from public.image_generations where user_id = %s", (user,)
    ).fetchone()
    assert row == (accepted,)  # the refused request left nothing behind


def test_supabase_js_sees_the_contracts_shapes(stack_state: StackState) -> None:
    doc = invoke_js(
        stack_state,
        [
            {"name": "start-generation",
             "body": {"prompt": "deno: js", "model_id": SCHNELL, "width": 768, "height": 1024}},
            {"name": "start-generation", "body": {"model_id": SCHNELL}},
            {"name": "start-generation", "body": {"prompt": "x", "model_id": "nobody/nothing"}},
        ],
        sign_up=True,
    )
    ok, missing, unknown = doc["results"]
    assert ok["status"] == 200 and ok["cors"] == "*", ok
    assert set(ok["data"]) == {"success", "generation_id", "job_id", "status", "message"}
    assert ok["data"]["success"] is True and ok["data"]["message"] == STARTED
    for failed in (missing, unknown):
        assert failed["status"] == 400 and failed["error_name"] == "FunctionsHttpError", failed
        assert set(failed["error_body"]) == {"error"}, failed
    anon = invoke_js(stack_state, [{"name": "start-generation", "body": {"prompt": "x"}}],
                     sign_up=False)["results"][0]
    assert anon["status"] == 401 and anon["error_body"] == {
        "error": "A signed-in user's access token is required"
    }, anon


def test_supabase_py_sees_the_contracts_errors(stack_state: StackState) -> None:
    from supabase import create_client
    from supabase_functions.errors import FunctionsHttpError

    client = create_client(stack_state.url, stack_state.keys.anon_key)
    with pytest.raises(FunctionsHttpError) as caught:
        client.functions.invoke("start-generation", {"body": {"prompt": "x"}})
    assert caught.value.status == 401
    assert caught.value.message == "A signed-in user's access token is required"
