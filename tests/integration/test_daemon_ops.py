"""The daemon's operational surface: health endpoints, --once, signals, config errors, SSRF."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.support import ROOT, Fake, Picture, WorkerProcess, running_worker, wait_until, worker_env

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")


def test_health_ready_and_metrics(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    with running_worker(stack_state, log_dir) as worker:
        base = f"http://127.0.0.1:{worker.health_port}"
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        gid, _ = picture.submit(user, "metrics please")
        picture.wait_status(gid, timeout=30)

        def finished_metrics() -> str | None:
            text = worker.metrics()
            return text if 'job_type="download-image",outcome="completed"' in text else None

        text = wait_until(finished_metrics, 10, message="metrics after a job")
        assert httpx.get(f"{base}/nope", timeout=5).status_code == 404
    assert 'picture_worker_jobs_total{job_type="generate-image",outcome="completed"} 1' in text
    assert "picture_worker_pickup_latency_seconds_count" in text
    assert "picture_worker_job_duration_seconds_bucket" in text
    assert "picture_worker_jobs_in_flight 0" in text
    assert "picture_worker_realtime_connected" in text
    assert "picture_worker_concurrency 3" in text


def test_worker_registers_and_deregisters(
    stack_state: StackState, picture: Picture, log_dir: Path, admin_conn: psycopg.Connection
) -> None:
    with running_worker(stack_state, log_dir, WORKER_CONCURRENCY=2) as worker:
        row = admin_conn.execute(
            "select concurrency, stopped_at, mode from job_workers where worker_id = %s",
            (worker.worker_id,),
        ).fetchone()
        assert row == (2, None, "polling")
        active = admin_conn.execute(
            "select count(*) from active_workers where worker_id = %s", (worker.worker_id,)
        ).fetchone()
        assert active == (1,)
    stopped = admin_conn.execute(
        "select stopped_at is not null from job_workers where worker_id = %s", (worker.worker_id,)
    ).fetchone()
    assert stopped == (True,)


def test_once_drains_the_queue_and_exits(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    gids = [picture.submit(user, f"batch {i}")[0] for i in range(5)]
    worker = WorkerProcess(stack_state, log_dir, args=("--once",)).start()
    assert worker.wait(90) == 0, worker.log_text()[-2000:]
    assert all(picture.generation(g)["status"] == "completed" for g in gids)
    assert worker.actions("worker.drained")


def test_second_signal_exits_at_once(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    user = picture.create_user()
    worker = WorkerProcess(stack_state, log_dir, WORKER_SHUTDOWN_GRACE=60).start().wait_ready()
    try:
        gid, _ = picture.submit(user, "[slow:30] keep the worker busy")
        wait_until(
            lambda: picture.generation(gid)["status"] == "processing", 20, message="processing"
        )
        worker.signal(signal.SIGTERM)
        wait_until(lambda: worker.actions("worker.stopping"), 10, message="draining")
        worker.signal(signal.SIGINT)
        assert worker.wait(10) == 1
        assert worker.actions("worker.killed")
    finally:
        worker.kill()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SUPABASE_URL": None}, "SUPABASE_URL: required but not set"),
        ({"WORKER_CONCURRENCY": "lots"}, "WORKER_CONCURRENCY: Input should be a valid integer"),
        ({"REPLICATE_API_TOKEN": None}, "REPLICATE_API_TOKEN: required but not set"),
    ],
)
def test_bad_configuration_is_one_clear_line(
    stack_state: StackState, env: dict[str, str | None], expected: str
) -> None:
    full = worker_env(stack_state)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr
    assert stack_state.keys.service_role_key not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "url",
    [
        "http://replicate.delivery/x.webp",  # not https
        "https://127.0.0.1/x.webp",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x.webp",
        "https://localhost/x.webp",  # a DNS name resolving to loopback
        "https://evil.example.com/x.webp",  # not on the allow-list
    ],
)
def test_unsafe_output_urls_fail_permanently_and_store_nothing(
    stack_state: StackState,
    picture: Picture,
    log_dir: Path,
    admin_conn: psycopg.Connection,
    url: str,
) -> None:
    user = picture.create_user()
    gid, _ = picture.submit(user, "ssrf probe")
    admin_conn.execute("delete from job_queue where payload->>'generation_id' = %s", (gid,))
    job_id = (
        picture.db.rpc(
            "enqueue_job",
            {
                "p_job_type": "download-image",
                "p_payload": {
                    "generation_id": gid,
                    "user_id": user,
                    "output_url": url,
                    "format": "webp",
                },
            },
        )
        .execute()
        .data
    )
    # No dev escape hatch here: production rules only.
    with running_worker(
        stack_state,
        log_dir,
        WORKER_DEV_HTTP_HOSTS="",
        WORKER_ALLOWED_DOWNLOAD_HOSTS="replicate.delivery,*.replicate.delivery",
    ):
        wait_until(
            lambda: (
                picture.db.table("job_queue")
                .select("status")
                .eq("id", job_id)
                .single()
                .execute()
                .data["status"]
                == "failed"
            ),
            30,
            message="download refused",
        )
    job = picture.db.table("job_queue").select("*").eq("id", job_id).single().execute().data
    assert job["attempt_number"] == 1, "a refusal is permanent: no retry spent"
    gen = picture.generation(gid)
    assert gen["status"] == "failed" and gen["error_message"]
    assert not gen["images"]
    stored = admin_conn.execute(
        "select count(*) from storage.objects where name like %s", (f"%{gid}%",)
    ).fetchone()
    assert stored == (0,)
