"""`picture-worker migrate` as an operator runs it: a subprocess against real databases.

One throwaway PostgreSQL 15 cluster for the module; each test gets a database of its own,
bootstrapped the way Supabase provides one (roles, auth and storage schemas), empty or
holding a deployed variant (M or G, the fixtures of tests/db). Migrations run as the
non-superuser ``postgres`` role, like ``supabase db push``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg import sql

from devstack.pg import PgCluster
from tests.db.conftest import create_database, drop_database, load_variant
from tests.db.dbkit import Database
from tests.support import ROOT
from worker import migrate

FILES = sorted(migrate.default_migrations_dir().glob("*.sql"))
VERSIONS = [p.name.split("_", 1)[0] for p in FILES]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    # Not under pytest's tmp_path (mode 0700): the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="picture-migrate-cli-"))
    pg = PgCluster(root / "pg", fast=True)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def new_db(cluster: PgCluster) -> Iterator[Callable[[], Database]]:
    """``new_db()`` -> an empty, bootstrapped database, dropped after the test."""
    names: list[str] = []

    def make() -> Database:
        name = f"m_{uuid.uuid4().hex[:12]}"
        names.append(name)
        db = create_database(cluster, name)
        cluster.bootstrap(dbname=name)
        return db

    yield make
    for name in names:
        drop_database(cluster, name)


def run_migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "worker", "migrate", *args],
        env={**base, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def recorded(db: Database) -> list[str]:
    with db.admin() as conn:
        rows = conn.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    return [str(r["version"]) for r in rows]


def assert_target_schema(db: Database) -> None:
    assert (
        db.scalar(
            "select count(*) from information_schema.columns where table_schema = 'public'"
            " and table_name = 'job_queue' and column_name in"
            " ('attempt_number', 'scheduled_at', 'locked_by', 'locked_until', 'dedupe_key')"
        )
        == 5
    )
    assert db.scalar("select count(*) from storage.buckets where id = 'generated-images'") == 1
    assert db.scalar("select to_regprocedure('public.retry_jobs(uuid, text, integer, boolean)')")
    assert db.scalar("select to_regclass('public.queue_summary')") is not None


def test_an_empty_database_gets_every_migration_recorded(new_db: Callable[[], Database]) -> None:
    db = new_db()
    proc = run_migrate("--database-url", db.url("postgres"))
    assert proc.returncode == 0, proc.stderr
    applying = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("applying")]
    assert applying == [p.name for p in FILES]
    assert proc.stdout.strip().splitlines()[-1] == (
        f"applied {len(FILES)} migration(s); database is up to date"
    )
    assert recorded(db) == VERSIONS
    assert_target_schema(db)

    second = run_migrate("--database-url", db.url("postgres"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "applied 0 migration(s); database is up to date"
    assert recorded(db) == VERSIONS


@pytest.mark.parametrize("variant", ["m", "g"])
def test_a_deployed_variant_upgrades_in_place(new_db: Callable[[], Database], variant: str) -> None:
    db = new_db()
    load_variant(db, variant)
    user = db.make_user()
    attempts = "attempts" if variant == "m" else "attempt_number"
    with db.admin() as conn:
        gen = conn.execute(
            "insert into public.image_generations (user_id, prompt, status)"
            " values (%s, 'an old picture', 'completed') returning id",
            (user,),
        ).fetchone()
        assert gen is not None
        insert = sql.SQL(
            "insert into public.job_queue (job_type, payload, status, {})"
            " values ('generate-image', jsonb_build_object('generation_id', %s::text),"
            " 'failed', 3)"
        ).format(sql.Identifier(attempts))
        conn.execute(insert, (gen["id"],))

    proc = run_migrate(env={"DATABASE_URL": db.url("postgres")})  # the URL from the env
    assert proc.returncode == 0, proc.stderr
    assert f"applied {len(FILES)} migration(s)" in proc.stdout
    assert recorded(db) == VERSIONS
    assert_target_schema(db)
    assert db.scalar("select count(*) from public.image_generations") == 1
    job = db.scalar(
        "select row(status, attempt_number)::text from public.job_queue"
        " where payload ->> 'generation_id' = %s",
        (str(gen["id"]),),
    )
    assert job == "(failed,3)"
    # The upgraded queue works with the target RPCs (the operator's retry included).
    assert db.rpc("retry_jobs", job_type="generate-image")[0]["retry_jobs"] == 1


def test_dry_run_lists_and_applies_nothing(new_db: Callable[[], Database]) -> None:
    db = new_db()
    proc = run_migrate("--database-url", db.url("postgres"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[:-1] == [f"would apply {p.name}" for p in FILES]
    assert lines[-1] == f"would apply {len(FILES)} migration(s)"
    assert db.scalar("select to_regclass('public.job_queue')") is None
    assert recorded(db) == []

    assert run_migrate("--database-url", db.url("postgres")).returncode == 0
    after = run_migrate("--database-url", db.url("postgres"), "--dry-run")
    assert after.returncode == 0
    assert after.stdout.strip() == "would apply 0 migration(s)"


def test_a_failing_migration_stops_with_its_name_and_keeps_what_ran(
    new_db: Callable[[], Database], tmp_path: Path
) -> None:
    db = new_db()
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000000_first.sql").write_text("create table public.ok_table (id int);")
    (folder / "20990101000100_broken.sql").write_text("create table public.t (id int;")
    (folder / "20990101000200_never.sql").write_text("create table public.never (id int);")
    proc = run_migrate("--database-url", db.url("postgres"), "--dir", str(folder))
    assert proc.returncode == 1
    # Postgres' own message, with the LINE/caret context it gives for a syntax error.
    errors = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert errors[1:] == ["LINE 1: create table public.t (id int;", " " * 37 + "^"]
    assert errors[0].startswith("picture-worker: migration failed: 20990101000100_broken.sql:")
    assert recorded(db) == ["20990101000000"]
    assert db.scalar("select to_regclass('public.ok_table')") is not None
    assert db.scalar("select to_regclass('public.never')") is None


def test_a_bad_url_is_one_clear_line_and_exit_1(cluster: PgCluster) -> None:
    url = f"postgresql://supabase_admin@127.0.0.1:{cluster.port}/no_such_database"
    proc = run_migrate("--database-url", url)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("picture-worker: cannot migrate: OperationalError:")
    assert "no_such_database" in lines[0]
    assert proc.stdout == ""

    refused = run_migrate("--database-url", "postgresql://postgres@127.0.0.1:9/postgres")
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "Connection refused" in refused.stderr

    garbled = run_migrate("--database-url", "postgres//nowhere")
    assert garbled.returncode == 1
    assert len(garbled.stderr.strip().splitlines()) == 1
    assert garbled.stderr.startswith("picture-worker: cannot migrate: ")


def test_no_url_is_a_usage_error() -> None:
    proc = run_migrate()
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "picture-worker: DATABASE_URL: required but not set (or pass --database-url)"
    )
