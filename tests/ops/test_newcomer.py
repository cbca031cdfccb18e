"""The first hour of a new user (issue 14): the documented flags do what they say, a wrong
key stops `run` at once with one line, argument and usage errors are one line, output
piped into `head` never prints a traceback, and the documents' tables (metrics, pg_cron
schedules, environment variables) match the code and the database."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack.pg import free_port
from devstack.stack import StackState
from tests.ops.test_cli import cli, one_line_error
from tests.support import ROOT, WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.timeout(120)


def _run_once(state: StackState, log_dir: Path, *args: str, **env: str) -> WorkerProcess:
    worker = WorkerProcess(state, log_dir, args=("--once", *args), **env).start()
    code = worker.wait(60)
    assert code == 0, worker.log_text()[-3000:]
    return worker


def _started(worker: WorkerProcess) -> dict[str, object]:
    started = worker.actions("worker.started")
    assert len(started) == 1, worker.log_text()[-3000:]
    return started[0]


# -- run's flags ------
def test_run_concurrency_flag_overrides_the_environment(
    stack_state: StackState, log_dir: Path, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    worker = _run_once(stack_state, log_dir, "--concurrency", "2", WORKER_CONCURRENCY="5")
    assert "concurrency 2" in str(_started(worker)["msg"])
    row = admin_conn.execute(
        "select concurrency from job_workers where worker_id = %s", (worker.worker_id,)
    ).fetchone()
    assert row == (2,)


def test_run_no_realtime_flag_polls_only(
    stack_state: StackState, log_dir: Path, quiet_queue: None
) -> None:
    worker = _run_once(stack_state, log_dir, "--no-realtime", WORKER_REALTIME="true")
    assert "realtime off" in str(_started(worker)["msg"])
    assert not worker.actions("realtime.subscribed")


@pytest.mark.parametrize("value", ["0", "70", "-1"])
def test_run_concurrency_out_of_range_is_one_line_and_exit_2(
    stack_state: StackState, value: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--concurrency", value],
        env=worker_env(stack_state),
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert "--concurrency" in line and "1" in line and "64" in line


def test_an_unknown_argument_is_one_line_and_exit_2(stack_state: StackState) -> None:
    proc = cli(stack_state, "run", "--bogus")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "--bogus" in line


# -- a wrong key stops run at once ------
@pytest.mark.parametrize("which", ["anon", "garbage"])
def test_run_with_a_key_without_service_rights_exits_2_naming_the_variable(
    stack_state: StackState, which: str
) -> None:
    key = stack_state.keys.anon_key if which == "anon" else "not-a-key"
    env = worker_env(stack_state, SUPABASE_SERVICE_ROLE_KEY=key)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    assert time.monotonic() - started < 30
    line = one_line_error(proc)
    assert "SUPABASE_SERVICE_ROLE_KEY" in line
    assert key not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stdout


def test_run_waits_not_ready_while_supabase_is_unreachable(
    stack_state: StackState, log_dir: Path
) -> None:
    port = free_port()  # nothing listens here
    worker = WorkerProcess(
        stack_state, log_dir, SUPABASE_URL=f"http://127.0.0.1:{port}",
        WORKER_DEV_HTTP_HOSTS=f"127.0.0.1:{port},127.0.0.1:{stack_state.replicate_port}",
    ).start()
    try:
        base = f"http://127.0.0.1:{worker.health_port}"

        def health() -> int | None:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code
            except httpx.HTTPError:
                return None

        assert wait_until(health, 20, message="/healthz") == 200
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503
        assert worker.proc is not None and worker.proc.poll() is None  # still retrying
    finally:
        worker.signal(signal.SIGTERM)
        worker.wait(30)


def test_realtime_library_noise_is_folded_into_the_daemons_lines(
    stack_state: StackState, log_dir: Path, quiet_queue: None
) -> None:
    worker = WorkerProcess(stack_state, log_dir).start().wait_ready().wait_subscribed()
    try:
        wait_until(lambda: worker.events(), 5)
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    foreign = [
        e for e in worker.events()
        if not str(e.get("logger", "worker")).startswith(("worker", "functions_compat"))
    ]
    assert foreign == [], foreign
    message = str(_started(worker)["msg"])
    # "realtime on, mode polling" read as a contradiction: say what each part is about
    assert "mode polling" not in message and "predictions by polling Replicate" in message, message


# -- operator commands ------
def test_migrate_dry_run_of_a_missing_folder_is_an_error(stack_state: StackState) -> None:
    proc = cli(stack_state, "migrate", "--dry-run", "--dir", "/nonexistent",
               DATABASE_URL=f"postgresql://postgres@127.0.0.1:{stack_state.pg_port}/postgres")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line_error(proc)
    assert "/nonexistent" in line


def test_status_says_none_rather_than_newest_zero(
    stack_state: StackState, quiet_queue: None, admin_conn: psycopg.Connection
) -> None:
    admin_conn.execute("delete from public.job_queue where status = 'failed'")
    proc = cli(stack_state, "status")
    assert proc.returncode in (0, 1), proc.stderr
    assert "newest 0" not in proc.stdout
    assert re.search(r"Recent failures \(24 h\)\n\s+\(none\)", proc.stdout), proc.stdout


def test_status_into_a_closed_pipe_prints_no_traceback(stack_state: StackState) -> None:
    env = {"SUPABASE_URL": stack_state.url,
           "SUPABASE_SERVICE_ROLE_KEY": stack_state.keys.service_role_key,
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        f"{sys.executable} -m worker status | head -n 1",
        shell=True, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_functions_server_logs_json_without_colours_and_stops_with_0(
    stack_state: StackState, tmp_path: Path
) -> None:
    port = free_port()
    env = worker_env(stack_state, WORKER_LOG_FORMAT="json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "functions", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, message="functions server")
        httpx.options(f"http://127.0.0.1:{port}/start-generation", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "\x1b[" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the functions server logged nothing"
    for line in lines:
        json.loads(line)  # every line is one JSON document


# -- the documents match the code ------
def _table_names(doc: Path, heading: str) -> list[str]:
    """The first backticked name of each row of the table after ``heading``."""
    text = doc.read_text()
    start = text.index(heading)
    names: list[str] = []
    in_table = False
    for line in text[start:].splitlines()[1:]:
        line = line.strip()
        if line.startswith("|"):
            in_table = True
            m = re.match(r"\|\s*`([^`{ ]+)", line)
            if m:
                names.append(m.group(1))
        elif in_table:
            break
    return names


def test_every_documented_metric_exists_and_is_recorded() -> None:
    from worker.metrics import worker_metrics

    documented = _table_names(ROOT / "docs/operations.md", "Metrics:")
    assert len(documented) >= 8
    described = worker_metrics().described()
    source = "\n".join(p.read_text() for p in (ROOT / "worker").rglob("*.py")
                       if p.name != "metrics.py")
    for name in documented:
        assert name in described, f"{name} is documented but not described"
        assert f'"{name}"' in source, f"{name} is documented but never recorded"


def test_the_documented_pg_cron_schedules_are_the_ones_the_migrations_create(
    admin_conn: psycopg.Connection,
) -> None:
    created = {r[0] for r in admin_conn.execute("select jobname from cron.job")}
    for doc in ("docs/operations.md", "docs/deployment.md"):
        heading = "The expected schedules are:" if "operations" in doc else "the pg_cron schedules:"
        documented = set(_table_names(ROOT / doc, heading))
        assert documented == created, f"{doc}: documented {documented}, created {created}"


def test_the_readme_configuration_table_is_the_settings() -> None:
    from worker.settings import Settings

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration"):]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = lines[first:first + next(i for i, line in enumerate(lines[first:]) if not line.startswith("|"))]
    rows = [line for line in table if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])}
    primary: set[str] = set()
    every: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = [str(c) for c in getattr(alias, "choices", [alias])]
        primary.add(choices[0])
        every.update(choices)
    assert primary <= documented, f"not documented: {sorted(primary - documented)}"
    assert documented <= every, f"documented but not read: {sorted(documented - every)}"


def test_error_messages_point_at_documents_that_ship(stack_state: StackState) -> None:
    proc = cli(stack_state, "enqueue", "download-image", "{}")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "SPEC" not in line
    for doc in re.findall(r"docs/[\w./-]+\.md", line):
        assert (ROOT / doc).is_file(), doc


def test_retry_failed_in_bulk_says_how_many_it_skipped_for_a_live_dedupe_key(
    stack_state: StackState, admin_conn: psycopg.Connection, quiet_queue: None
) -> None:
    key = f"cleanup:{uuid.uuid4()}"
    old = cli(stack_state, "enqueue", "cleanup-storage", "{}", "--dedupe-key", key)
    admin_conn.execute(
        "update public.job_queue set status = 'failed', completed_at = now() where id = %s",
        (old.stdout.strip(),),
    )
    assert cli(stack_state, "enqueue", "cleanup-storage", "{}", "--dedupe-key", key).returncode == 0
    other = cli(stack_state, "enqueue", "cleanup-storage", "{}")
    admin_conn.execute(
        "update public.job_queue set status = 'failed', completed_at = now() where id = %s",
        (other.stdout.strip(),),
    )
    proc = cli(stack_state, "retry", "--failed", "--type", "cleanup-storage")
    assert proc.returncode == 0, proc.stderr
    assert "1 failed cleanup-storage job(s) requeued" in proc.stdout
    assert "1 skipped: another live job holds their dedupe key" in proc.stdout
