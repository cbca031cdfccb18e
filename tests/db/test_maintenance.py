"""Maintenance: fail_abandoned_generations, cleanup_old_jobs and their pg_cron schedules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from devstack.pg import SUPERUSER, PgCluster
from tests.db.conftest import require_extension
from tests.db.dbkit import Database, rerun_migrations
from worker import migrate

SCHEDULES = {
    "requeue-stale-jobs": ("* * * * *", "select public.requeue_stale_jobs()"),
    "fail-abandoned-generations": ("*/5 * * * *", "select public.fail_abandoned_generations()"),
}
LEGACY = ("process-jobs-worker", "process-job-queue")


def _idle(db: Database, gen: uuid.UUID, minutes: int) -> None:
    updated = db.scalar("select now()") - timedelta(minutes=minutes)
    db.backdate("image_generations", gen, updated_at=updated)


def test_fail_abandoned_generations(db: Database) -> None:
    user = db.make_user()
    abandoned = {s: db.make_generation(user, status=s) for s in ("processing", "downloading")}
    recent = db.make_generation(user, status="processing")
    served = db.make_generation(user, status="downloading")
    db.enqueue("download-image", payload={"generation_id": str(served)})
    finished = db.make_generation(user, status="completed")
    for gen in (*abandoned.values(), served, finished):
        _idle(db, gen, 31)
    _idle(db, recent, 10)
    assert db.service("select public.fail_abandoned_generations() as n")[0]["n"] == 2
    for gen in abandoned.values():
        row = db.generation(gen)
        assert row["status"] == "failed"
        assert "abandoned" in row["error_message"]
    assert db.generation(recent)["status"] == "processing"
    assert db.generation(served)["status"] == "downloading"
    assert db.generation(finished)["status"] == "completed"
    assert db.service("select public.fail_abandoned_generations() as n")[0]["n"] == 0


def test_cleanup_old_jobs_keeps_failed_for_30_days(db: Database) -> None:
    jobs = {}
    cases = [("completed", 8), ("completed", 6), ("cancelled", 8), ("failed", 8), ("failed", 31)]
    for status, days in cases:
        job_id = db.enqueue()
        completed = db.scalar("select now()") - timedelta(days=days)
        db.backdate("job_queue", job_id, status=status, completed_at=completed)
        jobs[(status, days)] = job_id
    # Rows the old system finished by hand carry no completed_at: their last change counts.
    for status, days in (("cancelled", 9), ("completed", 2)):
        job_id = db.enqueue()
        updated = db.scalar("select now()") - timedelta(days=days)
        db.backdate("job_queue", job_id, status=status, completed_at=None, updated_at=updated)
        jobs[(f"{status} by hand", days)] = job_id
    old_pending = db.enqueue()
    db.backdate("job_queue", old_pending,
                created_at=db.scalar("select now()") - timedelta(days=90))
    assert db.service("select public.cleanup_old_jobs() as n")[0]["n"] == 4
    left = {r["id"] for r in db.service("select id from public.job_queue")}
    assert left == {jobs[("completed", 6)], jobs[("failed", 8)],
                    jobs[("completed by hand", 2)], old_pending}


@pytest.fixture(scope="module")
def cron_db(pg_cluster: PgCluster, template_db: Database) -> Iterator[Database]:
    """The cluster's own ``postgres`` database (where pg_cron runs), deployed with the
    legacy edge-function schedules, then migrated. (``template_db`` first: it creates the
    cluster-wide roles.)"""
    require_extension(pg_cluster, "pg_cron")
    pg_cluster.bootstrap(dbname="postgres")
    db = Database(pg_cluster, "postgres")
    with db.connect("postgres") as conn:
        for name in LEGACY:
            conn.execute("select cron.schedule(%s, '* * * * *', %s)",
                         (name, f"select 'legacy {name}'"))
    assert _cron_jobs(db).keys() >= set(LEGACY)
    migrate.apply(db.url("postgres"))
    yield db


def _cron_jobs(db: Database) -> dict[str, dict[str, object]]:
    with psycopg.connect(db.dsn(SUPERUSER), row_factory=dict_row) as conn:
        rows = conn.execute(
            "select jobname, schedule, command, database, username, active from cron.job"
        ).fetchall()
    return {str(r["jobname"]): dict(r) for r in rows}


def test_pg_cron_schedules_the_maintenance_jobs(cron_db: Database) -> None:
    jobs = _cron_jobs(cron_db)
    for name, (schedule, command) in SCHEDULES.items():
        assert jobs[name]["schedule"] == schedule
        assert jobs[name]["command"] == command
        assert jobs[name]["database"] == "postgres"
        assert jobs[name]["active"] is True
    cleanup = jobs["cleanup-old-jobs"]
    assert cleanup["command"] == "select public.cleanup_old_jobs()"
    minute, hour, *rest = str(cleanup["schedule"]).split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"]  # daily


def test_pg_cron_legacy_edge_function_schedules_are_gone(cron_db: Database) -> None:
    assert not set(LEGACY) & _cron_jobs(cron_db).keys()


def test_pg_cron_schedules_stay_single_when_migrated_again(cron_db: Database) -> None:
    rerun_migrations(cron_db.url("postgres"))
    with psycopg.connect(cron_db.dsn(SUPERUSER)) as conn:
        rows = conn.execute("select jobname, count(*) from cron.job group by jobname").fetchall()
    counts: dict[str, int] = {str(name): int(n) for name, n in rows}
    assert all(counts.get(name) == 1 for name in (*SCHEDULES, "cleanup-old-jobs")), counts
