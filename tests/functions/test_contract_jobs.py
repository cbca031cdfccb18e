"""The worker-backed contracts: process-jobs (claims and runs up to 3 jobs inline),
process-generation (one synchronous Replicate generation) and the legacy synchronous
generate-image, against the local stack and its fake Replicate.

These use the ``standalone`` instance (``picture-worker functions``), whose environment lets
the worker download from the fake Replicate (WORKER_DEV_HTTP_HOSTS).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.functions.conftest import (
    FLUX,
    Functions,
    User,
    assert_cors,
    assert_error,
    row,
)
from tests.support import Fake, StackControl


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


@pytest.mark.usefixtures("quiet_queue")
def test_process_jobs_hands_back_a_claim_whose_answer_was_lost(
    fn: Functions, stack_state: StackState, control: StackControl, admin_conn: psycopg.Connection
) -> None:
    job = admin_conn.execute(
        "select public.enqueue_job('cleanup-storage', '{\"limit\": 1}'::jsonb)"
    ).fetchone()
    assert job is not None
    control.faults({"path": "/rest/v1/rpc/claim_jobs", "fault": "drop", "count": 1})
    response = fn.post("process-jobs", stack_state.keys.service_role_key, json={}, timeout=60)
    assert response.status_code == 500, response.text
    assert control.fault_counts()["injected"].get("drop") == 1
    row = admin_conn.execute(
        "select status, attempt_number, locked_by from public.job_queue where id = %s", (job[0],)
    ).fetchone()
    assert row == ("pending", 0, None)


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


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"model_id": "attacker/model", "model_version": "a" * 64}, "Unknown model"),
        ({"model_id": "stability-ai/sdxl", "model_version": "b" * 64}, "model_version"),
    ],
)
def test_process_generation_asks_the_catalogue_before_paying(
    standalone: Functions, stack_state: StackState, fake: Fake, body: dict[str, Any], named: str
) -> None:
    key = stack_state.keys.service_role_key
    response = standalone.post("process-generation", key, json={"prompt": "p", **body},
                               timeout=60)
    assert response.status_code == 400, response.text
    data = response.json()
    assert data["success"] is False and named in data["error"], data
    requests = fake.stats()["requests"]
    creates = [k for k in requests if k.startswith("POST") and k.endswith("/predictions")]
    assert creates == [], requests  # not one create call reached Replicate


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
    # The original API: the app inserts a pending row itself (its own, with the legacy
    # columns and a catalogue model), then calls.
    created = user.client.table("image_generations").insert(
        {"user_id": user.id, "prompt": "draft", "negative_prompt": None, "model": FLUX,
         "width": 1024, "height": 1024, "steps": 4, "guidance_scale": 0, "status": "pending"}
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
