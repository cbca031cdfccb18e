"""The daemon end to end on the local stack, through the real RPCs and the fake Replicate."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from PIL import Image

from devstack.stack import StackState
from tests.integration.conftest import statuses
from tests.support import Fake, Picture, running_worker, wait_until

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")


def _created(fake: Fake) -> int:
    stats = fake.stats()
    return int(
        stats.get("predictions_created_total", sum(stats.get("predictions_created", {}).values()))
    )


def test_generation_goes_through_every_status_and_stores_one_image(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    status_log: psycopg.Connection,
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=0.6)
    user = picture.create_user()
    with running_worker(stack_state, log_dir) as worker:
        gid, _job_id = picture.submit(
            user, "a red fox in the snow", "black-forest-labs/flux-schnell"
        )
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "completed", gen
    assert statuses(status_log, gid) == [
        "pending",
        "queued",
        "processing",
        "downloading",
        "completed",
    ]
    assert gen["replicate_prediction_id"]
    assert gen["generation_time_seconds"] is not None and float(gen["generation_time_seconds"]) > 0
    assert len(gen["images"]) == 1
    image = gen["images"][0]
    assert image["storage_path"] == f"{user}/{gid}.webp"
    assert image["format"] == "webp" and image["user_id"] == user
    response = httpx.get(image["public_url"], timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert len(response.content) == image["file_size"]
    assert Image.open(io.BytesIO(response.content)).format == "WEBP"
    objects = status_log.execute(
        "select count(*) from storage.objects where bucket_id = 'generated-images' and name like %s",
        (f"%{gid}%",),
    ).fetchone()
    assert objects is not None and objects[0] == 1
    jobs = picture.jobs_for(gid)
    assert [(j["job_type"], j["status"], j["attempt_number"]) for j in jobs] == [
        ("generate-image", "completed", 1),
        ("download-image", "completed", 1),
    ]
    assert jobs[1]["priority"] == 1 and jobs[1]["dedupe_key"] == f"download:{gid}"
    assert worker.actions("job.completed"), "one JSON log line per transition"
    line = worker.actions("job.completed")[0]
    for key in ("job_id", "job_type", "attempt", "generation_id", "worker_id", "duration"):
        assert key in line, line


def test_realtime_pickup_is_fast_with_a_slow_poll(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.1)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, WORKER_POLL_INTERVAL=30) as worker:
        worker.wait_subscribed()
        time.sleep(1.0)  # past the initial poll after subscribing
        latencies = []
        for i in range(3):
            gid, _ = picture.submit(user, f"realtime pickup {i}")
            picture.wait_status(gid, timeout=20)
            job = picture.jobs_for(gid)[0]
            started = job["started_at"]
            created = job["created_at"]
            from worker.jobs import parse_ts

            latencies.append((parse_ts(started) - parse_ts(created)).total_seconds())  # type: ignore[operator]
    assert max(latencies) < 1.0, latencies


def test_polling_alone_completes_the_pipeline(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    with running_worker(
        stack_state, log_dir, WORKER_REALTIME="false", WORKER_POLL_INTERVAL=0.5
    ) as worker:
        gid, _ = picture.submit(user, "polling only")
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "completed"
    assert not worker.actions("realtime.subscribed")


def test_transient_failure_never_shows_failed(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    status_log: psycopg.Connection,
    log_dir: Path,
) -> None:
    fake.configure(http_5xx_next=1)  # the first create answers 500
    user = picture.create_user()
    with running_worker(stack_state, log_dir):
        gid, _ = picture.submit(user, "transient then fine")
        gen = picture.wait_status(gid, timeout=40)
    seen = statuses(status_log, gid)
    assert gen["status"] == "completed", gen
    assert "failed" not in seen
    assert seen.count("queued") >= 2, seen  # went back to queued for the retry
    retried = status_log.execute(
        "select error_message from public._test_status_log where generation_id = %s and status = 'queued' "
        "and error_message is not null",
        (gid,),
    ).fetchall()
    assert retried, "the error is kept on the generation while the retry waits"
    job = picture.jobs_for(gid)[0]
    assert job["attempt_number"] == 2 and job["status"] == "completed"


def test_permanent_failure_fails_at_once(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    status_log: psycopg.Connection,
    log_dir: Path,
) -> None:
    user = picture.create_user()
    with running_worker(stack_state, log_dir):
        gid, _ = picture.submit(user, "[nsfw] something the model refuses")
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "failed"
    assert gen["error_message"] and "nsfw" in gen["error_message"].lower()
    job = picture.jobs_for(gid)[0]
    assert job["status"] == "failed" and job["attempt_number"] == 1, job
    assert statuses(status_log, gid)[-1] == "failed"
    assert not gen["images"]


def test_cancelling_a_running_generation_cancels_the_prediction(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    with running_worker(
        stack_state, log_dir, WORKER_HEARTBEAT_INTERVAL=0.5, WORKER_LEASE_SECONDS=10
    ) as worker:
        gid, _ = picture.submit(user, "[slow:20] a long one")
        wait_until(
            lambda: picture.generation(gid)["replicate_prediction_id"], 20, message="prediction"
        )
        picture.db.rpc("cancel_generation", {"p_generation_id": gid}).execute()
        wait_until(
            lambda: worker.actions("job.cancelled"), 15, message="job cancelled in the worker"
        )
    gen = picture.generation(gid)
    assert gen["status"] == "cancelled"
    assert picture.jobs_for(gid)[0]["status"] == "cancelled"
    prediction = httpx.get(
        f"{stack_state.replicate_url}/predictions/{gen['replicate_prediction_id'] or ''}",
        headers={"Authorization": "Bearer x"},
        timeout=5,
    )
    cancels = fake.stats().get("cancels", fake.stats().get("cancels_total"))
    assert cancels == 1 or (
        prediction.status_code == 200 and prediction.json()["status"] == "canceled"
    )


def test_sigterm_mid_job_finishes_within_grace(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    with running_worker(stack_state, log_dir, WORKER_SHUTDOWN_GRACE=15) as worker:
        gid, _ = picture.submit(user, "[slow:2] finish me")
        wait_until(
            lambda: picture.generation(gid)["status"] == "processing", 15, message="processing"
        )
        worker.signal()
        assert worker.wait(30) == 0
    gen = picture.generation(gid)
    job = picture.jobs_for(gid)[0]
    assert job["status"] == "completed", job
    assert gen["status"] in ("downloading", "completed")


def test_sigterm_releases_what_cannot_finish_and_another_worker_reuses_the_prediction(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    with running_worker(stack_state, log_dir, WORKER_SHUTDOWN_GRACE=0.5) as worker:
        gid, _ = picture.submit(user, "[slow:6] too slow for the grace period")
        wait_until(
            lambda: picture.generation(gid)["replicate_prediction_id"], 15, message="prediction"
        )
        worker.signal()
        assert worker.wait(30) == 0
    job = picture.jobs_for(gid)[0]
    assert job["status"] == "pending" and job["attempt_number"] == 0, (
        job
    )  # released, attempt given back
    assert job["locked_by"] is None
    created_before = _created(fake)
    with running_worker(stack_state, log_dir):
        gen = picture.wait_status(gid, timeout=40)
    assert gen["status"] == "completed"
    assert _created(fake) == created_before, "the prediction was reused, not paid twice"


def test_kill_9_mid_job_recovers_after_the_lease(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    log_dir: Path,
    admin_conn: psycopg.Connection,
) -> None:
    user = picture.create_user()
    env = {"WORKER_LEASE_SECONDS": 5, "WORKER_HEARTBEAT_INTERVAL": 1, "WORKER_REQUEUE_INTERVAL": 1}
    with running_worker(stack_state, log_dir, **env) as first:
        gid, _ = picture.submit(user, "[slow:4] survive a crash")
        wait_until(
            lambda: picture.generation(gid)["replicate_prediction_id"], 15, message="prediction"
        )
        first.kill()
    created_before = _created(fake)
    with running_worker(stack_state, log_dir, **env):
        gen = picture.wait_status(gid, timeout=60)
    assert gen["status"] == "completed"
    assert len(gen["images"]) == 1
    count = admin_conn.execute(
        "select count(*) from storage.objects where name like %s", (f"%{gid}%",)
    ).fetchone()
    assert count is not None and count[0] == 1
    assert _created(fake) == created_before, "the prediction was reused after the crash"
    assert picture.jobs_for(gid)[0]["attempt_number"] == 2


def test_four_workers_two_hundred_generations_each_job_once(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    log_dir: Path,
    admin_conn: psycopg.Connection,
) -> None:
    fake.configure(latency_seconds=0.05)
    user = picture.create_user()
    workers = [running_worker(stack_state, log_dir, WORKER_POLL_INTERVAL=0.5) for _ in range(4)]
    procs = [w.__enter__() for w in workers]
    try:
        gids = [picture.submit(user, f"crowd {i}")[0] for i in range(200)]
        wait_until(
            lambda: (
                admin_conn.execute(
                    "select count(*) from image_generations where id = any(%s) and status = 'completed'",
                    (gids,),
                ).fetchone()[0]
                == 200
            ),  # type: ignore[index]
            timeout=240,
            interval=0.5,
            message="200 completed generations",
        )
    finally:
        for w in workers:
            w.__exit__(None, None, None)
    jobs = admin_conn.execute(
        "select job_type, status, attempt_number from job_queue where payload->>'generation_id' = any(%s)",
        ([str(g) for g in gids],),
    ).fetchall()
    assert len(jobs) == 400
    assert {(t, s, a) for t, s, a in jobs} <= {
        ("generate-image", "completed", 1),
        ("download-image", "completed", 1),
    }
    images = admin_conn.execute(
        "select count(*), count(distinct generation_id) from images where generation_id = any(%s)",
        (gids,),
    ).fetchone()
    assert images == (200, 200)
    completed_ids = [e["job_id"] for p in procs for e in p.actions("job.completed")]
    assert len(completed_ids) == 400 == len(set(completed_ids))
    assert sum(1 for p in procs if p.actions("job.completed")) >= 2, "work was shared"
