"""The operator commands (`status`, `retry`, `requeue`, `enqueue`, `cancel`) through the real
CLI (`python -m worker ...` as a subprocess) against the session stack.

Jobs and generations are created through the stack's API (enqueue_job, the table API); the
superuser connection only moves them into states that take time to reach for real (failed
after three attempts, a lease that expired) and reads the result back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from devstack.stack import StackState
from tests.support import ROOT, Picture, StackControl, service_client

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def ops_env(state: StackState, **changes: str | None) -> dict[str, str]:
    """The caller's environment with the stack's URL and service key only: no Replicate
    token, no WORKER_* (the operator commands must not need them)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WORKER_", "SUPABASE_", "REPLICATE_", "DATABASE_URL"))
    }
    env["SUPABASE_URL"] = state.url
    env["SUPABASE_SERVICE_ROLE_KEY"] = state.keys.service_role_key
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def cli(state: StackState, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=ops_env(state, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("picture-worker: ")
    return lines[0]


@pytest.fixture
def quiet_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    """Start from an empty queue so the bulk commands see this test's jobs only."""
    admin_conn.execute("delete from public.job_queue")
    yield
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")


@pytest.fixture
def picture(stack_state: StackState) -> Picture:
    return Picture(stack_state)


def job_row(admin_conn: psycopg.Connection, job_id: str) -> dict[str, Any]:
    cur = admin_conn.execute(
        "select status, attempt_number, priority, max_attempts, dedupe_key, scheduled_at <= now()"
        " as due, locked_by, error_message from public.job_queue where id = %s",
        (job_id,),
    )
    row = cur.fetchone()
    assert row is not None, f"job {job_id} not found"
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def generation_status(admin_conn: psycopg.Connection, gid: str) -> str:
    row = admin_conn.execute(
        "select status from public.image_generations where id = %s", (gid,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def fail(admin_conn: psycopg.Connection, job_id: str, gid: str | None, *, age: str = "0") -> None:
    """The state three failed attempts leave behind (complete_job on the last attempt)."""
    admin_conn.execute(
        "update public.job_queue set status = 'failed', attempt_number = max_attempts,"
        " completed_at = now() - %s::interval, error_message = 'Replicate said no'"
        " where id = %s",
        (f"{age} seconds", job_id),
    )
    if gid is not None:
        admin_conn.execute(
            "update public.image_generations set status = 'failed',"
            " error_message = 'Replicate said no' where id = %s",
            (gid,),
        )


# -- status ------
def test_status_shows_the_queue_workers_and_failures(
    stack_state: StackState,
    picture: Picture,
    admin_conn: psycopg.Connection,
    quiet_queue: None,
) -> None:
    user = picture.create_user()
    pending_gid, _ = picture.submit(user)
    failed_gid, failed_job = picture.submit(user, prompt="a storm")
    fail(admin_conn, failed_job, failed_gid)
    _, stuck_job = picture.submit(user, prompt="a ship")
    admin_conn.execute(
        "update public.job_queue set status = 'processing', attempt_number = 1,"
        " locked_by = 'gone-worker', locked_until = now() - interval '5 minutes' where id = %s",
        (stuck_job,),
    )
    worker_id = f"ops-test-{uuid.uuid4().hex[:8]}"
    db = service_client(stack_state)
    db.rpc(
        "register_worker",
        {
            "p_worker_id": worker_id,
            "p_hostname": "box-1",
            "p_version": "9.9.9",
            "p_concurrency": 3,
            "p_in_flight": 2,
            "p_jobs_done": 41,
            "p_realtime_connected": True,
        },
    ).execute()
    try:
        text = cli(stack_state, "status")
        as_json = cli(stack_state, "status", "--json")
    finally:
        db.rpc("register_worker", {"p_worker_id": worker_id, "p_stopped": True}).execute()

    assert text.returncode == 0, text.stderr
    out = text.stdout
    for heading in ("Queue", "By type and status", "Workers (", "Recent failures"):
        assert heading in out
    assert "pending 1 (due now 1," in out
    assert "processing 1" in out and "stuck 1" in out
    assert re.search(rf"{worker_id}\s+box-1\s+9\.9\.9\s+3\s+2\s+41\s+0\s+True", out), out
    assert failed_job in out and "Replicate said no" in out
    # The by-type table is aligned: every row's COUNT column ends where its header ends.
    table = out.split("By type and status\n", 1)[1].split("\n\n", 1)[0].splitlines()
    end = table[0].index("COUNT") + len("COUNT")
    assert len(table) == 4  # header + pending, processing, failed generate-image
    for row in table[1:]:
        assert row[end - 1].isdigit() and row[end] == " ", table

    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert set(doc) == {"summary", "by_type", "workers", "recent_failures", "stuck_jobs"}
    assert doc["summary"]["pending"] == 1 and doc["summary"]["processing"] == 1
    assert doc["stuck_jobs"] == 1
    counts = {(r["job_type"], r["status"]): r["count"] for r in doc["by_type"]}
    assert counts == {("generate-image", s): 1 for s in ("pending", "processing", "failed")}
    mine = [w for w in doc["workers"] if w["worker_id"] == worker_id]
    assert mine and mine[0]["in_flight"] == 2 and mine[0]["jobs_done"] == 41
    assert [f["id"] for f in doc["recent_failures"]] == [failed_job]
    assert doc["recent_failures"][0]["generation_id"] == failed_gid
    assert generation_status(admin_conn, pending_gid) == "queued"


def test_status_warns_when_jobs_wait_and_no_worker_runs(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    admin_conn.execute("update public.job_workers set stopped_at = now() where stopped_at is null")
    picture.submit(picture.create_user())
    proc = cli(stack_state, "status")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: jobs are due and no worker" in proc.stdout
    assert "(none seen in the last 2 minutes)" in proc.stdout


# -- retry ------
def test_retry_one_failed_job_requeues_it_and_its_generation(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    gid, job = picture.submit(picture.create_user())
    fail(admin_conn, job, gid)
    proc = cli(stack_state, "retry", job)
    assert proc.returncode == 0, proc.stderr
    assert f"job {job} requeued" in proc.stdout
    row = job_row(admin_conn, job)
    assert (row["status"], row["attempt_number"], row["due"], row["locked_by"]) == (
        "pending",
        0,
        True,
        None,
    )
    assert row["error_message"] == "Replicate said no"  # the last error stays for the record
    assert generation_status(admin_conn, gid) == "queued"

    again = cli(stack_state, "retry", job)
    assert again.returncode == 1
    assert "is pending: only failed jobs can be retried" in one_line_error(again)


def test_retry_failed_in_bulk_by_type_oldest_first_within_the_limit(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    user = picture.create_user()
    submitted = [picture.submit(user, prompt=f"picture {i}") for i in range(3)]
    for age, (gid, job) in zip((300, 200, 100), submitted, strict=True):
        fail(admin_conn, job, gid, age=str(age))
    other = (
        service_client(stack_state)
        .rpc("enqueue_job", {"p_job_type": "cleanup-storage", "p_payload": {}})
        .execute()
        .data
    )
    fail(admin_conn, other, None, age="900")

    proc = cli(
        stack_state, "retry", "--failed", "--type", "generate-image", "--limit", "2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"requeued": 2, "skipped": 0, "job_id": None}
    statuses = [job_row(admin_conn, job)["status"] for _, job in submitted]
    assert statuses == ["pending", "pending", "failed"]
    assert [generation_status(admin_conn, gid) for gid, _ in submitted] == [
        "queued",
        "queued",
        "failed",
    ]
    assert job_row(admin_conn, other)["status"] == "failed"  # another type: untouched

    rest = cli(stack_state, "retry", "--failed", "--type", "generate-image")
    assert rest.returncode == 0 and rest.stdout.strip() == "1 failed generate-image job(s) requeued"
    none_left = cli(stack_state, "retry", "--failed", "--type", "generate-image")
    assert none_left.returncode == 1
    assert none_left.stdout.strip() == "no failed generate-image jobs"


def test_retry_cancelled_needs_the_flag(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    gid, job = picture.submit(picture.create_user())
    assert cli(stack_state, "cancel", gid).returncode == 0
    refused = cli(stack_state, "retry", job)
    assert refused.returncode == 1
    assert "add --cancelled" in one_line_error(refused)
    proc = cli(stack_state, "retry", job, "--cancelled")
    assert proc.returncode == 0, proc.stderr
    assert job_row(admin_conn, job)["status"] == "pending"
    assert generation_status(admin_conn, gid) == "queued"


def test_retry_keeps_one_live_job_per_dedupe_key(
    stack_state: StackState, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    key = f"download:{uuid.uuid4()}"
    old = cli(stack_state, "enqueue", "cleanup-storage", "{}", "--dedupe-key", key)
    assert old.returncode == 0, old.stderr
    fail(admin_conn, old.stdout.strip(), None)
    live = cli(stack_state, "enqueue", "cleanup-storage", "{}", "--dedupe-key", key)
    assert live.returncode == 0 and live.stdout.strip() != old.stdout.strip()

    proc = cli(stack_state, "retry", old.stdout.strip())
    assert proc.returncode == 1
    assert "another live job holds its dedupe key" in one_line_error(proc)
    assert job_row(admin_conn, old.stdout.strip())["status"] == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give either JOB_ID or --failed"),
        (("--failed", str(uuid.uuid4())), "give either JOB_ID or --failed"),
        (("not-a-uuid",), "JOB_ID must be a UUID"),
        (("--failed", "--type", "paint-house"), "unknown job type 'paint-house'"),
        (("--failed", "--limit", "0"), "--limit must be at least 1"),
    ],
)
def test_retry_usage_errors_exit_2(
    stack_state: StackState, args: tuple[str, ...], message: str
) -> None:
    proc = cli(stack_state, "retry", *args)
    assert proc.returncode == 2
    assert message in one_line_error(proc)


def test_retry_unknown_job_exits_1(stack_state: StackState) -> None:
    missing = str(uuid.uuid4())
    proc = cli(stack_state, "retry", missing)
    assert proc.returncode == 1
    assert one_line_error(proc) == f"picture-worker: job {missing} not found"


# -- requeue ------
def test_requeue_stuck_returns_expired_leases_to_pending(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    gid, job = picture.submit(picture.create_user())
    admin_conn.execute(
        "update public.job_queue set status = 'processing', attempt_number = 1,"
        " locked_by = 'dead-worker', locked_until = now() - interval '1 minute' where id = %s",
        (job,),
    )
    admin_conn.execute(
        "update public.image_generations set status = 'processing' where id = %s", (gid,)
    )
    proc = cli(stack_state, "requeue", "--stuck", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"requeued": 1}
    row = job_row(admin_conn, job)
    assert (row["status"], row["locked_by"], row["attempt_number"]) == ("pending", None, 1)
    assert generation_status(admin_conn, gid) == "queued"

    nothing = cli(stack_state, "requeue", "--stuck")
    assert nothing.returncode == 1 and nothing.stdout.strip() == "no stuck jobs"
    usage = cli(stack_state, "requeue")
    assert usage.returncode == 2 and "--stuck" in usage.stderr


# -- enqueue ------
def test_enqueue_prints_the_job_id_and_honours_the_options(
    stack_state: StackState, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    key = f"ops-{uuid.uuid4().hex}"
    proc = cli(
        stack_state,
        "enqueue",
        "cleanup-storage",
        '{"limit": 10}',
        "--priority",
        "5",
        "--max-attempts",
        "2",
        "--dedupe-key",
        key,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert UUID_RE.match(job_id), proc.stdout
    row = job_row(admin_conn, job_id)
    assert (row["status"], row["priority"], row["max_attempts"], row["dedupe_key"]) == (
        "pending",
        5,
        2,
        key,
    )
    payload = admin_conn.execute(
        "select payload from public.job_queue where id = %s", (job_id,)
    ).fetchone()
    assert payload is not None and payload[0] == {"limit": 10}

    same = cli(stack_state, "enqueue", "cleanup-storage", "{}", "--dedupe-key", key, "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout) == {"job_id": job_id}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("paint-house", "{}"), "unknown job type 'paint-house'; known: generate-image"),
        (("generate-image", "{not json"), "PAYLOAD_JSON is not valid JSON"),
        (("generate-image", "[1, 2]"), "PAYLOAD_JSON must be a JSON object"),
        (("generate-image", '{"prompt": "x"}'), "a generate-image payload needs generation_id"),
        (("download-image", '{"generation_id": "g"}'), "needs output_url"),
        (("cleanup-storage", "{}", "--max-attempts", "0"), "--max-attempts must be at least 1"),
    ],
)
def test_enqueue_rejects_bad_input_with_exit_2(
    stack_state: StackState, admin_conn: psycopg.Connection, args: tuple[str, ...], message: str
) -> None:
    before = admin_conn.execute("select count(*) from public.job_queue").fetchone()
    proc = cli(stack_state, "enqueue", *args)
    assert proc.returncode == 2
    assert message in one_line_error(proc)
    assert admin_conn.execute("select count(*) from public.job_queue").fetchone() == before


# -- cancel ------
def test_cancel_a_generation_and_its_pending_job(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    gid, job = picture.submit(picture.create_user())
    proc = cli(stack_state, "cancel", gid, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "generation_id": gid,
        "previous_status": "queued",
        "status": "cancelled",
        "jobs_cancelled": 1,
    }
    assert generation_status(admin_conn, gid) == "cancelled"
    assert job_row(admin_conn, job)["status"] == "cancelled"

    again = cli(stack_state, "cancel", gid)
    assert again.returncode == 1
    assert "is already cancelled: nothing to cancel" in one_line_error(again)

    gid2, _ = picture.submit(picture.create_user())
    text = cli(stack_state, "cancel", gid2)
    assert text.returncode == 0
    assert text.stdout.strip() == f"generation {gid2} cancelled (was queued); 1 job(s) cancelled"


def test_cancel_errors(stack_state: StackState) -> None:
    missing = str(uuid.uuid4())
    proc = cli(stack_state, "cancel", missing)
    assert proc.returncode == 1
    assert one_line_error(proc) == f"picture-worker: generation {missing} not found"
    bad = cli(stack_state, "cancel", "42")
    assert bad.returncode == 2
    assert "GENERATION_ID must be a UUID" in one_line_error(bad)


# -- configuration ------
@pytest.mark.parametrize("missing", ["SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"])
def test_a_missing_variable_is_one_line_and_exit_2(stack_state: StackState, missing: str) -> None:
    proc = cli(stack_state, "status", **{missing: None})
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        f"picture-worker: configuration error: {missing}: required but not set"
    )


def test_the_secret_key_name_is_accepted(stack_state: StackState) -> None:
    proc = cli(
        stack_state,
        "status",
        "--json",
        SUPABASE_SERVICE_ROLE_KEY=None,
        SUPABASE_SECRET_KEY=stack_state.keys.service_role_key,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_new_secret_key_works(stack_state: StackState) -> None:
    key = stack_state.keys.secret_key
    assert key.startswith("sb_secret_")
    proc = cli(stack_state, "status", "--json", SUPABASE_SERVICE_ROLE_KEY=key)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), dict)


def test_an_unknown_secret_key_is_a_configuration_error(stack_state: StackState) -> None:
    """The gateway's 401 {"message": "Invalid API key"} has no PostgREST code."""
    bad = "sb_secret_" + "z" * 40
    proc = cli(stack_state, "status", SUPABASE_SERVICE_ROLE_KEY=bad)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert "Invalid API key" in line and "SUPABASE_SERVICE_ROLE_KEY" in line
    assert bad not in proc.stderr + proc.stdout


def test_a_gateway_error_says_supabase_is_unavailable(
    stack_state: StackState, control: StackControl
) -> None:
    control.faults({"path": "/rest/v1/*", "methods": ["GET"], "fault": "502"})
    proc = cli(stack_state, "status")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "Supabase is unavailable right now (HTTP 502" in line and "try again" in line


def test_a_key_without_service_rights_is_a_configuration_error(stack_state: StackState) -> None:
    proc = cli(stack_state, "status", SUPABASE_SERVICE_ROLE_KEY=stack_state.keys.anon_key)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "SUPABASE_SERVICE_ROLE_KEY must be the project's service_role" in line
    assert stack_state.keys.anon_key not in proc.stderr + proc.stdout


def test_an_unreachable_supabase_is_one_line_and_exit_1(stack_state: StackState) -> None:
    proc = cli(stack_state, "requeue", "--stuck", SUPABASE_URL="http://127.0.0.1:9")
    assert proc.returncode == 1
    assert "cannot reach Supabase at http://127.0.0.1:9" in one_line_error(proc)


def test_a_bad_url_is_a_configuration_error(stack_state: StackState) -> None:
    proc = cli(stack_state, "status", SUPABASE_URL="db.example.test")
    assert proc.returncode == 2
    assert "SUPABASE_URL: must be an http(s) URL" in one_line_error(proc)


def test_retry_jobs_is_for_the_service_role_only(stack_state: StackState) -> None:
    anon = create_client(
        stack_state.url,
        stack_state.keys.anon_key,
        ClientOptions(auto_refresh_token=False, persist_session=False),
    )
    with pytest.raises(APIError) as caught:
        anon.rpc("retry_jobs", {"p_job_type": "generate-image"}).execute()
    assert caught.value.code == "42501"
