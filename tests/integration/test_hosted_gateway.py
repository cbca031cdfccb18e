"""The worker against hosted Supabase's gateway and limits (issue 12, points 1 and 2).

Driven by the stack's fault switch (``control``): Kong's 502/503/504 bodies (no ``code``),
429s, 401 for an unknown API key, 414 past 8 KB of URL, and PostgREST's ``max_rows``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture, StackControl, WorkerProcess, running_worker, wait_until
from worker import wiring
from worker.adapters.rest import SupabaseGenerations
from worker.errors import PermanentError

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")


def _created(fake: Fake) -> int:
    stats = fake.stats()
    return int(
        stats.get("predictions_created_total", sum(stats.get("predictions_created", {}).values()))
    )


def _jobs(picture: Picture, gid: str) -> list[tuple[str, str, int]]:
    return [(j["job_type"], j["status"], j["attempt_number"]) for j in picture.jobs_for(gid)]


# -- point 1: a gateway error is classified by its HTTP status ------------------------------
@pytest.mark.parametrize("fault", ["502", "503", "504", "429"])
def test_a_gateway_blip_on_a_generation_write_does_not_fail_the_job(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
    fault: str,
) -> None:
    """Kong answers the worker's first two writes of image_generations (the `processing`
    mark, then the prediction id) with its body and no code: both are retried in-process,
    one prediction is paid, the job completes on its first attempt."""
    fake.configure(latency_seconds=0.3)
    user = picture.create_user()
    gid, _ = picture.submit(user, f"gateway blip {fault}")
    control.faults(
        {"path": "/rest/v1/image_generations", "methods": ["PATCH"], "fault": fault, "count": 2}
    )
    with running_worker(stack_state, log_dir):
        gen = picture.wait_status(gid, timeout=40)
    assert control.fault_counts()["injected"].get(fault) == 2
    assert gen["status"] == "completed", gen
    assert _created(fake) == 1
    assert _jobs(picture, gid) == [
        ("generate-image", "completed", 1),
        ("download-image", "completed", 1),
    ]


def test_a_lost_write_of_the_prediction_id_does_not_fail_the_running_prediction(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    """Once the generation is `processing` (the prediction being created: the fake holds
    the create for WORKER_REPLICATE_WAIT = 1 s), every write of image_generations answers
    502 until the in-process retries of the prediction id are spent. The prediction runs
    and bills: the job keeps polling it and writes the id with the outcome."""
    fake.configure(latency_seconds=3.0)
    user = picture.create_user()
    gid, _ = picture.submit(user, "unrecorded prediction")

    def processing() -> bool:
        row = admin_conn.execute(
            "select status from public.image_generations where id = %s", (gid,)
        ).fetchone()
        return row is not None and row[0] == "processing"

    with running_worker(stack_state, log_dir) as worker:
        wait_until(processing, 20, interval=0.01, message="the generation processing")
        control.faults(
            {"path": "/rest/v1/image_generations", "methods": ["PATCH"], "fault": "502",
             "count": 4}
        )
        gen = picture.wait_status(gid, timeout=40)
    assert control.fault_counts()["injected"].get("502") == 4
    assert worker.actions("prediction.unrecorded"), "the id's write gave up, the job went on"
    assert gen["status"] == "completed", gen
    assert _created(fake) == 1
    assert _jobs(picture, gid)[0] == ("generate-image", "completed", 1)


def test_a_gateway_blip_while_downloading_does_not_fail_the_generation(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    control: StackControl,
    log_dir: Path,
) -> None:
    """The download's store_image call gets a 502 from the gateway (an RPC POST postgrest-py
    does not retry), its upload a 503 from Storage's gateway: retried, stored once."""
    user = picture.create_user()
    gid, _ = picture.submit(user, "download blip")
    control.faults(
        {"path": "/rest/v1/rpc/store_image", "methods": ["POST"], "fault": "502", "count": 1},
        {"path": "/storage/v1/object/generated-images/*", "methods": ["POST"], "fault": "503",
         "count": 1},
    )
    with running_worker(stack_state, log_dir):
        gen = picture.wait_status(gid, timeout=40)
    injected = control.fault_counts()["injected"]
    assert injected.get("502") == 1 and injected.get("503") == 1, injected
    assert gen["status"] == "completed", gen
    assert len(gen["images"]) == 1
    assert _jobs(picture, gid)[1] == ("download-image", "completed", 1)


def test_a_refused_key_is_a_configuration_error_naming_the_variable(
    stack_state: StackState, log_dir: Path
) -> None:
    """An unknown sb_secret_ key: the gateway answers 401 {"message": "Invalid API key"}
    with no code. The worker's start-up probe stops it (exit 2) with one line naming the
    variable, and never prints the key."""
    bad = "sb_secret_" + "q" * 40
    worker = WorkerProcess(stack_state, log_dir, SUPABASE_SERVICE_ROLE_KEY=bad).start()
    try:
        assert worker.wait(30) == 2
    finally:
        worker.kill()
    lines = worker.log_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("picture-worker: SUPABASE_SERVICE_ROLE_KEY: the project refused")
    assert "Invalid API key" in lines[0]
    assert bad not in worker.log_text()


def test_a_uri_too_long_is_logged_as_a_bug(
    stack_state: StackState, caplog: pytest.LogCaptureFixture
) -> None:
    client = wiring.supabase_client(stack_state.url, stack_state.keys.service_role_key)
    gens = SupabaseGenerations(client)
    with caplog.at_level(logging.ERROR, logger="worker.supabase"), pytest.raises(
        PermanentError
    ) as caught:
        gens.find_by_prediction("p" * 9000)
    assert "414" in caught.value.message
    bugs = [r for r in caplog.records if getattr(r, "action", "") == "supabase.uri_too_long"]
    assert bugs and bugs[0].levelno == logging.ERROR
    assert "p" * 100 not in bugs[0].getMessage()  # the path, never the query


def test_the_worker_runs_on_the_new_secret_key(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    """SUPABASE_SERVICE_ROLE_KEY=sb_secret_...: REST, Storage and Realtime (the key as the
    tenant token) all take it."""
    key = stack_state.keys.secret_key
    assert key.startswith("sb_secret_")
    user = picture.create_user()
    with running_worker(stack_state, log_dir, SUPABASE_SERVICE_ROLE_KEY=key) as worker:
        worker.wait_subscribed()
        gid, _ = picture.submit(user, "on the secret key")
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "completed", gen
    assert len(gen["images"]) == 1
    assert key not in worker.log_text()


# -- point 2: list queries in chunks, never fooled by max_rows ------------------------------
def _upload(state: StackState, paths: list[str]) -> None:
    headers = {
        "Authorization": f"Bearer {state.keys.service_role_key}",
        "apikey": state.keys.service_role_key,
        "Content-Type": "image/png",
        "x-upsert": "true",
    }
    with httpx.Client(base_url=f"{state.url}/storage/v1", headers=headers, timeout=30) as http:
        for path in paths:
            http.post(f"/object/generated-images/{path}", content=b"\x89PNG\r\n\x1a\n").raise_for_status()


def _objects(conn: psycopg.Connection, user: str) -> set[str]:
    rows = conn.execute(
        "select name from storage.objects where bucket_id = 'generated-images' and name like %s",
        (f"{user}/%",),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _run_cleanup(state: StackState, picture: Picture, log_dir: Path) -> dict[str, object]:
    job_id = picture.db.rpc(
        "enqueue_job", {"p_job_type": "cleanup-storage", "p_payload": {"limit": 100_000}}
    ).execute().data
    worker = WorkerProcess(
        state, log_dir, args=("--once",), WORKER_JOB_TYPES="cleanup-storage", WORKER_REALTIME="false"
    ).start()
    try:
        assert worker.wait(120) == 0, worker.log_text()[-3000:]
    finally:
        worker.stop()
    row = picture.db.table("job_queue").select("*").eq("id", job_id).single().execute().data
    return dict(row)


def _live_generations(picture: Picture, user: str, count: int) -> list[str]:
    gids = []
    for i in range(count):
        gid, job_id = picture.submit(user, f"live {i}")
        picture.db.table("job_queue").update({"status": "cancelled"}).eq("id", job_id).execute()
        gids.append(gid)
    return gids


def test_cleanup_storage_reads_hundreds_of_ids_in_chunks(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, log_dir: Path
) -> None:
    """300 objects: one `in.(...)` of their ids is ~11 KB of URL (a 414 on hosted). The
    orphans go, the live generations' objects stay."""
    user = picture.create_user()
    live = _live_generations(picture, user, 5)
    orphans = [str(uuid.uuid4()) for _ in range(295)]
    _upload(stack_state, [f"{user}/{gid}.png" for gid in live + orphans])
    job = _run_cleanup(stack_state, picture, log_dir)
    assert job["status"] == "completed", job
    assert _objects(admin_conn, user) == {f"{user}/{gid}.png" for gid in live}
    result = job["result"]
    assert isinstance(result, dict) and result["removed"] >= 295


def test_cleanup_storage_is_not_fooled_by_a_capped_answer(
    stack_state: StackState,
    picture: Picture,
    control: StackControl,
    admin_conn: psycopg.Connection,
    log_dir: Path,
) -> None:
    """With max_rows at 4, a read of 12 generations answers 4 rows: the 8 others must not
    read as deleted (their images would go)."""
    user = picture.create_user()
    live = _live_generations(picture, user, 10)
    orphans = [str(uuid.uuid4()) for _ in range(2)]
    _upload(stack_state, [f"{user}/{gid}.png" for gid in live + orphans])
    control.settings(max_rows=4)
    job = _run_cleanup(stack_state, picture, log_dir)
    assert job["status"] == "completed", job
    assert _objects(admin_conn, user) == {f"{user}/{gid}.png" for gid in live}
