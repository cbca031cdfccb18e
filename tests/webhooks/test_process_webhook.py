"""process-webhook and the safety net's SQL, against the stack with real predictions of the
fake Replicate: what is trusted, races with the prediction id, and which generations the
safety net picks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture, running_worker, wait_until
from tests.webhooks.conftest import Hook, create_prediction, get_prediction

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")


def _finished_prediction(state: StackState, prompt: str) -> dict[str, Any]:
    pid = str(create_prediction(state, prompt)["id"])
    return dict(
        wait_until(
            lambda: (p := get_prediction(state, pid))["status"] == "succeeded" and p,
            20,
            message=f"prediction {pid} succeeded",
        )
    )


def _generation(
    conn: psycopg.Connection, user: str, prediction_id: str | None, status: str = "processing"
) -> str:
    row = conn.execute(
        "insert into public.image_generations"
        " (user_id, prompt, model, width, height, status, replicate_prediction_id)"
        " values (%s, 'a webhook test', 'FLUX Schnell', 1024, 1024, %s, %s) returning id",
        (user, status, prediction_id),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _job(conn: psycopg.Connection, job_id: str) -> dict[str, Any]:
    cur = conn.execute(
        "select status, attempt_number, error_message, result, payload"
        " from public.job_queue where id = %s",
        (job_id,),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip([d.name for d in cur.description or ()], row, strict=True))


def test_a_delivery_that_beats_the_prediction_id_is_retried_until_it_matches(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    hook: Hook,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    prediction = _finished_prediction(stack_state, "early delivery")
    user = picture.create_user()
    gid = _generation(admin_conn, user, None)  # the prediction id is not written yet
    response = hook.deliver(json.dumps(prediction).encode())
    assert response.status_code == 200
    job_id = response.json()["job_id"]
    assert "generation_id" not in _job(admin_conn, job_id)["payload"]
    with running_worker(stack_state, log_dir):
        first = wait_until(
            lambda: (
                (j := _job(admin_conn, job_id))["attempt_number"] == 1
                and j["status"] == "pending"
                and j
            ),
            20,
            message="first attempt found no generation",
        )
        assert "no generation has prediction" in first["error_message"]
        admin_conn.execute(
            "update public.image_generations set replicate_prediction_id = %s where id = %s",
            (prediction["id"], gid),
        )
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "completed" and len(gen["images"]) == 1
    job = _job(admin_conn, job_id)
    assert (job["status"], job["attempt_number"]) == ("completed", 2)
    assert job["result"]["source"] == "delivery"


def test_a_stored_delivery_that_fails_verification_is_not_trusted(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    prediction = _finished_prediction(stack_state, "forged job")
    user = picture.create_user()
    gid = _generation(admin_conn, user, prediction["id"])
    forged = {**prediction, "output": ["https://replicate.delivery/evil/out-0.webp"]}
    job_id = (
        picture.db.rpc(
            "enqueue_job",
            {
                "p_job_type": "process-webhook",
                "p_payload": {
                    "prediction_id": prediction["id"],
                    "body": json.dumps(forged),
                    "webhook": {
                        "webhook-id": "msg_forged",
                        "webhook-timestamp": str(int(time.time())),
                        "webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZSBvZiB0aGUgam9i",
                    },
                },
            },
        )
        .execute()
        .data
    )
    with running_worker(stack_state, log_dir) as worker:
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "completed" and len(gen["images"]) == 1
    job = _job(admin_conn, job_id)
    assert job["result"]["source"] == "fetch"
    assert job["result"]["output_url"] == get_prediction(stack_state, prediction["id"])["output"][0]
    assert worker.actions("webhook.untrusted")


def test_a_worker_without_the_secret_fetches_instead_of_trusting(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    hook: Hook,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    prediction = _finished_prediction(stack_state, "no secret on this worker")
    user = picture.create_user()
    gid = _generation(admin_conn, user, prediction["id"])
    job_id = hook.deliver(json.dumps(prediction).encode()).json()["job_id"]
    gets_before = fake.stats()["requests"].get("GET /v1/predictions/{id}", {}).get("200", 0)
    with running_worker(stack_state, log_dir, REPLICATE_WEBHOOK_SECRET="") as worker:
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "completed"
    assert _job(admin_conn, job_id)["result"]["source"] == "fetch"
    assert worker.actions("webhook.unverified")
    gets = fake.stats()["requests"].get("GET /v1/predictions/{id}", {}).get("200", 0)
    assert gets > gets_before


def test_a_repeated_delivery_after_completion_changes_nothing(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    hook: Hook,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    prediction = _finished_prediction(stack_state, "late duplicate")
    user = picture.create_user()
    gid = _generation(admin_conn, user, prediction["id"])
    body = json.dumps(prediction).encode()
    with running_worker(stack_state, log_dir):
        hook.deliver(body)
        done = picture.wait_status(gid, timeout=30)
        late = hook.deliver(body).json()["job_id"]  # a new webhook-id: Replicate's retry
        wait_until(lambda: _job(admin_conn, late)["status"] == "completed", 20, message="late job")
    after = picture.generation(gid)
    assert _job(admin_conn, late)["result"]["skipped"] == "generation already completed"
    assert after["updated_at"] == done["updated_at"] and len(after["images"]) == 1
    downloads = admin_conn.execute(
        "select count(*) from public.job_queue where job_type = 'download-image'"
        " and payload ->> 'generation_id' = %s",
        (gid,),
    ).fetchone()
    assert downloads is not None and downloads[0] == 1


@pytest.fixture
def rows(admin_conn: psycopg.Connection, picture: Picture) -> Iterator[dict[str, str]]:
    """Generations in the states the safety net must tell apart; removed afterwards."""
    user = picture.create_user()
    tag = uuid.uuid4().hex[:10]
    made = {
        "stale": _generation(admin_conn, user, f"stale{tag}"),
        "stuck queued": _generation(admin_conn, user, f"stuck{tag}", "queued"),
        "fresh": _generation(admin_conn, user, f"fresh{tag}"),
        "busy": _generation(admin_conn, user, f"busy{tag}"),
        "downloading": _generation(admin_conn, user, f"down{tag}", "downloading"),
        "no prediction": _generation(admin_conn, user, None),
    }
    with admin_conn.transaction():
        admin_conn.execute("set local session_replication_role = replica")
        admin_conn.execute(
            "update public.image_generations set updated_at = now() - interval '10 minutes'"
            " where id = any(%s::uuid[])",
            ([gid for name, gid in made.items() if name != "fresh"],),
        )
    admin_conn.execute(
        "insert into public.job_queue (job_type, payload, status)"
        " values ('download-image', jsonb_build_object('generation_id', %s::text), 'processing')",
        (made["busy"],),
    )
    yield made
    admin_conn.execute(
        "delete from public.image_generations where id = any(%s::uuid[])", (list(made.values()),)
    )


def _check_jobs(conn: psycopg.Connection, gid: str) -> list[dict[str, Any]]:
    cur = conn.execute(
        "select payload, dedupe_key, status from public.job_queue"
        " where job_type = 'process-webhook' and payload ->> 'generation_id' = %s",
        (gid,),
    )
    return [dict(zip([d.name for d in cur.description or ()], r, strict=True)) for r in cur]


def test_the_safety_net_picks_only_stale_processing_generations_once(
    picture: Picture, admin_conn: psycopg.Connection, rows: dict[str, str]
) -> None:
    enqueue = picture.db.rpc(
        "enqueue_webhook_checks", {"p_older_than_seconds": 60, "p_limit": 1000}
    )
    assert int(enqueue.execute().data) >= 1
    stale = _check_jobs(admin_conn, rows["stale"])
    assert len(stale) == 1
    assert len(_check_jobs(admin_conn, rows["stuck queued"])) == 1
    pid = stale[0]["payload"]["prediction_id"]
    assert stale[0]["payload"]["fetch"] is True and stale[0]["dedupe_key"] == f"webhook:{pid}"
    for name in ("fresh", "busy", "downloading", "no prediction"):
        assert _check_jobs(admin_conn, rows[name]) == [], name
    # Called again (another worker, pg_cron) while that job is live: nothing new.
    enqueue.execute()
    assert len(_check_jobs(admin_conn, rows["stale"])) == 1


def test_old_deliveries_are_cleaned_up(picture: Picture, admin_conn: psycopg.Connection) -> None:
    old, new = f"msg_old_{uuid.uuid4().hex}", f"msg_new_{uuid.uuid4().hex}"
    admin_conn.execute(
        "insert into public.webhook_deliveries (webhook_id, prediction_id, received_at)"
        " values (%s, 'p', now() - interval '8 days'), (%s, 'p', now() - interval '6 days')",
        (old, new),
    )
    removed = picture.db.rpc("cleanup_webhook_deliveries", {}).execute().data
    assert int(removed) >= 1
    left = admin_conn.execute(
        "select webhook_id from public.webhook_deliveries where webhook_id in (%s, %s)", (old, new)
    ).fetchall()
    assert left == [(new,)]


def test_a_prediction_replicate_no_longer_knows_fails_the_generation(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    user = picture.create_user()
    pid = f"gone{uuid.uuid4().hex[:16]}"
    gid = _generation(admin_conn, user, pid)
    job_id = (
        picture.db.rpc(
            "enqueue_job",
            {
                "p_job_type": "process-webhook",
                "p_payload": {"prediction_id": pid, "generation_id": gid, "fetch": True},
                "p_dedupe_key": f"webhook:{pid}",
            },
        )
        .execute()
        .data
    )
    with running_worker(stack_state, log_dir):
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "failed"
    assert "cannot be read from Replicate" in gen["error_message"]
    job = _job(admin_conn, job_id)
    assert (job["status"], job["attempt_number"]) == ("completed", 1)
    assert job["result"]["generation_status"] == "failed"


def test_pg_cron_cleans_deliveries_daily(admin_conn: psycopg.Connection) -> None:
    installed = admin_conn.execute(
        "select 1 from pg_extension where extname = 'pg_cron'"
    ).fetchone()
    if installed is None:
        pytest.skip("pg_cron is not installed on this machine")
    jobs = admin_conn.execute(
        "select jobname, schedule, command from cron.job where jobname like '%%webhook%%'"
    ).fetchall()
    assert len(jobs) == 1, jobs
    name, schedule, command = jobs[0]
    assert (name, command) == (
        "cleanup-webhook-deliveries",
        "select public.cleanup_webhook_deliveries()",
    )
    minute, hour, *rest = str(schedule).split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"]
