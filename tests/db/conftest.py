"""Fixtures of the database contract tests: a PostgreSQL 15 cluster of their own.

The session starts one throwaway cluster (fsync off), bootstraps a template database the
way Supabase provides one and migrates it once as the non-superuser ``postgres`` role.
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

from devstack.pg import SUPERUSER, PgCluster
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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    # Not under pytest's tmp_path: every pytest session resets /tmp/pytest-of-<user> to
    # mode 0700, which would lock the server user (postgres) out of a running cluster.
    root = Path(tempfile.mkdtemp(prefix="picture-dbtests-"))
    cluster = PgCluster(root / "pg", fast=True)
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
