"""POST /functions/v1/replicate-webhook on the stack: signatures, replays, enqueueing, speed."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from functions_compat.app import create_app
from tests.webhooks.conftest import Hook, prediction_body
from worker.errors import ConfigError

pytestmark = pytest.mark.usefixtures("quiet_queue")


def _jobs(conn: psycopg.Connection, pid: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select id, job_type, status, dedupe_key, payload from public.job_queue"
        " where dedupe_key = %s order by created_at",
        (f"webhook:{pid}",),
    ).fetchall()


def _deliveries(conn: psycopg.Connection, pid: str) -> int:
    row = conn.execute(
        "select count(*) from public.webhook_deliveries where prediction_id = %s", (pid,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _pid(body: bytes) -> str:
    return str(json.loads(body)["id"])


def _post_in_process(
    env: dict[str, str], body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST to an app built in this process from ``env`` (another configuration than the
    stack's own mount)."""

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(env))
        async with httpx.AsyncClient(transport=transport, base_url="http://functions") as client:
            return await client.post(
                "/functions/v1/replicate-webhook", content=body, headers=headers or {}
            )

    return asyncio.run(post())


def test_a_valid_delivery_enqueues_one_process_webhook_job(
    hook: Hook, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body()
    headers = hook.headers(body)
    response = hook.post(body, headers)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["received"] is True and doc["duplicate"] is False
    jobs = _jobs(admin_conn, _pid(body))
    assert len(jobs) == 1
    job_id, job_type, status, _key, payload = jobs[0]
    assert str(job_id) == doc["job_id"]
    assert (job_type, status) == ("process-webhook", "pending")
    # The job carries the raw body and its signature, so the worker can verify it again.
    assert payload["body"].encode() == body
    assert payload["prediction_id"] == _pid(body)
    assert payload["webhook"]["webhook-id"] == headers["webhook-id"]
    assert payload["webhook"]["webhook-signature"] == headers["webhook-signature"]
    assert _deliveries(admin_conn, _pid(body)) == 1


@pytest.mark.parametrize(
    "case",
    ["tampered body", "wrong secret", "stale timestamp", "future timestamp", "bad signature"],
)
def test_forged_or_expired_deliveries_are_refused(
    case: str, hook: Hook, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body()
    now = int(time.time())
    if case == "tampered body":
        headers = hook.headers(body)
        body = body.replace(b"succeeded", b"failed\x20\x20\x20")
    elif case == "wrong secret":
        headers = hook.headers(body, secret="whsec_" + "QUJD" * 8)
    elif case == "stale timestamp":
        headers = hook.headers(body, timestamp=now - 301 - 5)
    elif case == "future timestamp":
        headers = hook.headers(body, timestamp=now + 301 + 5)
    else:
        headers = {**hook.headers(body), "webhook-signature": "v1,AAAA v2,BBBB"}
    response = hook.post(body, headers)
    assert response.status_code == 401, response.text
    assert "error" in response.json()
    assert _jobs(admin_conn, _pid(body)) == []
    assert _deliveries(admin_conn, _pid(body)) == 0


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_a_bad_request(
    missing: str, hook: Hook, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body()
    headers = hook.headers(body)
    del headers[missing]
    response = hook.post(body, headers)
    assert response.status_code == 400
    assert missing in response.json()["error"]
    assert _jobs(admin_conn, _pid(body)) == []


def test_malformed_timestamp_and_non_prediction_bodies_are_bad_requests(hook: Hook) -> None:
    body = prediction_body()
    headers = {**hook.headers(body), "webhook-timestamp": "yesterday"}
    assert hook.post(body, headers).status_code == 400
    for bad in (b"not json", b"[1, 2]", b'{"status": "succeeded"}', b'{"id": "p1"}'):
        response = hook.deliver(bad)  # correctly signed, but not a prediction
        assert response.status_code == 400, bad
        assert "error" in response.json()


def test_only_the_first_of_identical_deliveries_is_accepted(
    hook: Hook, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body()
    headers = hook.headers(body)
    first = hook.post(body, headers)
    assert first.status_code == 200
    for _ in range(3):
        replay = hook.post(body, headers)
        assert replay.status_code == 409, replay.text
        assert replay.json()["duplicate"] is True and "error" in replay.json()
    assert len(_jobs(admin_conn, _pid(body))) == 1
    assert _deliveries(admin_conn, _pid(body)) == 1


def test_deliveries_of_one_prediction_share_its_live_job(
    hook: Hook, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body()
    first = hook.deliver(body).json()
    second = hook.deliver(body).json()  # another webhook-id: e.g. a second event
    assert first["job_id"] == second["job_id"]
    assert len(_jobs(admin_conn, _pid(body))) == 1
    assert _deliveries(admin_conn, _pid(body)) == 2
    # Once that job is finished, a later delivery gets a job of its own.
    admin_conn.execute(
        "update public.job_queue set status = 'completed' where id = %s", (first["job_id"],)
    )
    third = hook.deliver(body).json()
    assert third["job_id"] != first["job_id"]
    assert len(_jobs(admin_conn, _pid(body))) == 2


def test_a_running_prediction_is_acknowledged_without_a_job(
    hook: Hook, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body(status="processing")
    response = hook.deliver(body)
    assert response.status_code == 200
    assert response.json() == {"received": True, "ignored": "prediction processing"}
    assert _jobs(admin_conn, _pid(body)) == []


def test_a_large_body_is_not_copied_into_the_job(
    hook: Hook, admin_conn: psycopg.Connection
) -> None:
    source = "data:image/png;base64," + "A" * (100 * 1024)  # an img2img input echoed back
    body = prediction_body(input={"prompt": "x", "image": source})
    response = hook.deliver(body)
    assert response.status_code == 200, response.text
    payload = _jobs(admin_conn, _pid(body))[0][4]
    assert payload["fetch"] is True and "body" not in payload


def test_only_post_is_served(hook: Hook) -> None:
    response = httpx.get(hook.url, timeout=10)
    assert response.status_code == 405
    assert "error" in response.json()


def test_the_answer_comes_after_the_job_is_durable_and_fast(
    hook: Hook, admin_conn: psycopg.Connection
) -> None:
    latencies: list[float] = []
    for _ in range(50):
        body = prediction_body()
        headers = hook.headers(body)
        began = time.perf_counter()
        response = hook.post(body, headers)
        latencies.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text
        # Read right after the answer on another connection: the job is committed.
        row = admin_conn.execute(
            "select j.job_type, j.status, d.webhook_id from public.job_queue j"
            " join public.webhook_deliveries d on d.prediction_id = j.payload ->> 'prediction_id'"
            " where j.id = %s",
            (response.json()["job_id"],),
        ).fetchone()
        assert row == ("process-webhook", "pending", headers["webhook-id"])
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"\nreplicate-webhook latency over {len(latencies)} deliveries: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert p99 < 1.0


def test_api_roles_cannot_touch_deliveries_or_call_the_webhook_rpcs(
    stack_state: StackState,
) -> None:
    rest = f"{stack_state.url}/rest/v1"
    for key in (stack_state.keys.anon_key,):
        headers = {"apikey": key, "Authorization": f"Bearer {key}"}
        for name, args in (
            ("record_webhook", {"p_webhook_id": "x", "p_prediction_id": "y", "p_payload": {}}),
            ("enqueue_webhook_checks", {"p_older_than_seconds": 1}),
            ("cleanup_webhook_deliveries", {}),
        ):
            response = httpx.post(f"{rest}/rpc/{name}", json=args, headers=headers, timeout=10)
            assert response.status_code in (401, 403), (name, response.text)
        listed = httpx.get(f"{rest}/webhook_deliveries", headers=headers, timeout=10)
        assert listed.status_code in (401, 403), listed.text


def test_record_webhook_for_a_known_generation_links_it(
    stack_state: StackState, hook: Hook, admin_conn: psycopg.Connection
) -> None:
    pid = f"link{uuid.uuid4().hex[:16]}"
    row = admin_conn.execute(
        "insert into public.image_generations (prompt, model, status, replicate_prediction_id)"
        " values ('x', 'FLUX Schnell', 'processing', %s) returning id",
        (pid,),
    ).fetchone()
    assert row is not None
    try:
        response = hook.deliver(prediction_body(pid=pid))
        assert response.status_code == 200
        payload = _jobs(admin_conn, pid)[0][4]
        assert payload["generation_id"] == str(row[0])
    finally:  # no stale `processing` row for later tests' safety nets
        admin_conn.execute("delete from public.image_generations where id = %s", (row[0],))


def test_without_a_secret_the_endpoint_refuses_everything(stack_env: dict[str, str]) -> None:
    env = {k: v for k, v in stack_env.items() if k != "REPLICATE_WEBHOOK_SECRET"}
    response = _post_in_process(env, prediction_body())
    assert response.status_code == 500
    assert "REPLICATE_WEBHOOK_SECRET" in response.json()["error"]


def test_a_malformed_secret_or_tolerance_fails_at_start(stack_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="REPLICATE_WEBHOOK_SECRET"):
        create_app({**stack_env, "REPLICATE_WEBHOOK_SECRET": "whsec_***not-base64***"})
    with pytest.raises(ConfigError, match="FUNCTIONS_WEBHOOK_TOLERANCE"):
        create_app({**stack_env, "FUNCTIONS_WEBHOOK_TOLERANCE": "0"})


def test_the_tolerance_is_configurable(stack_env: dict[str, str], hook: Hook) -> None:
    env = {**stack_env, "FUNCTIONS_WEBHOOK_TOLERANCE": "30"}
    body = prediction_body()
    response = _post_in_process(env, body, hook.headers(body, timestamp=int(time.time()) - 60))
    assert response.status_code == 401
    assert "too old" in response.json()["error"]
