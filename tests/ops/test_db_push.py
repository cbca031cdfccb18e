"""The hosted deployment path: ``supabase db push`` (the Supabase CLI, the npm package
``supabase`` pinned in tests/js) applies our migrations, without Docker, against the session
stack's PostgreSQL (``--db-url ...?sslmode=disable``), as the non-superuser ``postgres``
role the way it does on a hosted project.

- a fresh, bootstrapped project database gets every migration applied and recorded in the
  CLI's own history table, and a second push finds nothing pending;
- the session stack's database, migrated by ``picture-worker migrate``, has nothing pending
  for the CLI either (both record into supabase_migrations.schema_migrations).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from devstack.pg import PgCluster
from devstack.stack import Stack
from tests.db.conftest import create_database, drop_database
from tests.db.dbkit import Database
from tests.ops.test_migrate_cli import FILES, VERSIONS, assert_target_schema, recorded
from tests.support import ROOT

SUPABASE_CLI = ROOT / "tests" / "js" / "node_modules" / ".bin" / "supabase"
UP_TO_DATE = "Remote database is up to date."


def push(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    if not SUPABASE_CLI.exists():
        pytest.fail(f"{SUPABASE_CLI} is missing: run scripts/setup.sh test")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "DATABASE_"))}
    return subprocess.run(
        [str(SUPABASE_CLI), "db", "push", "--db-url", url, *args],
        cwd=ROOT,  # supabase/migrations is read from here
        env={**env, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def cluster(stack: Stack) -> PgCluster:
    return stack.cluster


@pytest.fixture
def fresh_db(cluster: PgCluster) -> Iterator[Database]:
    name = f"push_{uuid.uuid4().hex[:12]}"
    db = create_database(cluster, name)
    cluster.bootstrap(dbname=name)
    try:
        yield db
    finally:
        drop_database(cluster, name)


def test_db_push_applies_every_migration_to_a_fresh_project_database(
    fresh_db: Database, cluster: PgCluster
) -> None:
    url = f"{fresh_db.url('postgres')}?sslmode=disable"
    with psycopg.connect(cluster.dsn(dbname=fresh_db.name)) as conn:
        row = conn.execute("select rolsuper from pg_roles where rolname = 'postgres'").fetchone()
    assert row == (False,), "db push must run as the non-superuser postgres role"

    dry = push(url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = [line.split("•", 1)[1].strip() for line in dry.stderr.splitlines() if "•" in line]
    assert listed == [p.name for p in FILES]

    applied = push(url, "--yes")
    assert applied.returncode == 0, applied.stderr
    applying = [
        line.removeprefix("Applying migration ").removesuffix("...")
        for line in applied.stderr.splitlines()
        if line.startswith("Applying migration ")
    ]
    assert applying == [p.name for p in FILES], applied.stderr
    assert recorded(fresh_db) == VERSIONS
    assert_target_schema(fresh_db)

    again = push(url, "--dry-run")
    assert again.returncode == 0, again.stderr
    assert UP_TO_DATE in again.stdout, (again.stdout, again.stderr)


def test_nothing_is_pending_on_the_session_stack(cluster: PgCluster) -> None:
    proc = push(f"{cluster.url('postgres')}?sslmode=disable", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert UP_TO_DATE in proc.stdout, (proc.stdout, proc.stderr)
    assert "Would push" not in proc.stderr
