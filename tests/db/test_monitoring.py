"""Monitoring for the dashboard: views after a scripted history, the worker registry, comments."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.db.dbkit import Database


def _script_history(db: Database) -> dict[str, Any]:
    """pending x2 (+1 not yet due), completed, failed now, failed yesterday, stuck, running."""
    ids: dict[str, Any] = {}
    ids["done"] = db.enqueue(priority=9)
    assert db.claim("w1") is not None
    db.rpc("complete_job", job_id=ids["done"], result={"ok": True}, worker_id="w1")
    job = db.job(ids["done"])
    db.backdate("job_queue", ids["done"], started_at=job["completed_at"] - timedelta(seconds=10))
    for name in ("failed", "old_failed"):
        ids[name] = db.enqueue(priority=8)
        assert db.claim("w1") is not None
        db.rpc("complete_job", job_id=ids[name], error=f"{name} boom", retryable=False,
               worker_id="w1")
    old = db.job(ids["old_failed"])["completed_at"] - timedelta(hours=25)
    db.backdate("job_queue", ids["old_failed"], completed_at=old)
    ids["stuck"] = db.enqueue(priority=7)
    assert db.claim("w2") is not None
    db.expire_lease(ids["stuck"])
    ids["running"] = db.enqueue("download-image", priority=6)
    assert db.claim("w3") is not None
    ids["pending"] = [db.enqueue(), db.enqueue("download-image"),
                      db.enqueue(scheduled_at="2999-01-01T00:00:00Z")]
    return ids


def test_queue_health_counts_per_type_and_status(db: Database) -> None:
    _script_history(db)
    rows = db.service("select * from public.queue_health")
    counts = {(r["job_type"], r["status"]): r["count"] for r in rows}
    assert counts == {
        ("generate-image", "completed"): 1,
        ("generate-image", "failed"): 2,
        ("generate-image", "processing"): 1,
        ("generate-image", "pending"): 2,
        ("download-image", "processing"): 1,
        ("download-image", "pending"): 1,
    }
    completed = next(r for r in rows if r["status"] == "completed")
    assert completed["avg_duration_seconds"] == pytest.approx(Decimal(10), abs=Decimal("0.01"))
    assert completed["avg_attempts"] == 1
    for row in rows:
        assert row["oldest_job"] <= row["newest_job"]


# The shared client library reads the views by their original columns (issue 11 point 8).
ORIGINAL_COLUMNS = {
    "queue_health": ["job_type", "status", "count", "oldest_job", "newest_job",
                     "avg_duration_seconds", "avg_attempts"],
    "failed_jobs_recent": ["id", "job_type", "payload", "attempts", "error_message",
                           "created_at", "completed_at"],
    "stuck_jobs": ["id", "job_type", "payload", "started_at", "minutes_stuck"],
}


@pytest.mark.parametrize("view", sorted(ORIGINAL_COLUMNS))
def test_views_start_with_their_original_columns(db: Database, view: str) -> None:
    with db.admin() as conn:
        rows = conn.execute(
            "select attname from pg_attribute where attrelid = to_regclass(%s)"
            " and attnum > 0 and not attisdropped order by attnum", (f"public.{view}",)
        ).fetchall()
        options = conn.execute(
            "select reloptions from pg_class where oid = to_regclass(%s)", (f"public.{view}",)
        ).fetchone()
    columns = [r["attname"] for r in rows]
    assert columns[: len(ORIGINAL_COLUMNS[view])] == ORIGINAL_COLUMNS[view]
    assert options is not None and "security_invoker=true" in (options["reloptions"] or [])


def test_original_columns_carry_the_original_values(db: Database) -> None:
    ids = _script_history(db)
    failed = db.service("select * from public.failed_jobs_recent")[0]
    assert failed["attempts"] == failed["attempt_number"] == 1
    assert failed["payload"] == db.job(ids["failed"])["payload"]
    stuck = db.service("select * from public.stuck_jobs")[0]
    assert stuck["payload"] == db.job(ids["stuck"])["payload"]
    assert 0 <= stuck["minutes_stuck"] < 5
    job = db.job(ids["done"])
    assert job["attempts"] == job["attempt_number"] == 1


def test_queue_summary(db: Database) -> None:
    _script_history(db)
    rows = db.service("select * from public.queue_summary")
    assert len(rows) == 1
    summary = rows[0]
    assert summary["pending"] == 3
    assert summary["pending_due"] == 2
    assert summary["processing"] == 2
    assert summary["completed_last_hour"] == 1
    assert summary["failed_last_hour"] == 1
    assert summary["avg_processing_seconds"] == pytest.approx(Decimal(10), abs=Decimal("0.01"))


def test_failed_and_stuck_views(db: Database) -> None:
    ids = _script_history(db)
    failed = db.service("select * from public.failed_jobs_recent")
    assert [r["id"] for r in failed] == [ids["failed"]]
    assert failed[0]["error_message"] == "failed boom"
    stuck = db.service("select * from public.stuck_jobs")
    assert [r["id"] for r in stuck] == [ids["stuck"]]
    assert stuck[0]["locked_by"] == "w2"
    assert stuck[0]["seconds_past_lease"] >= 0
    assert db.service("select public.requeue_stale_jobs() as n")[0]["n"] == 1
    assert db.service("select * from public.stuck_jobs") == []


def test_register_worker_upserts_and_active_workers_lists_live_ones(db: Database) -> None:
    db.service("select public.register_worker('w1', 'host-a', '1.0.0', 3, 0)")
    first = db.service("select * from public.job_workers where worker_id = 'w1'")[0]
    db.service("select public.register_worker('w1', null, null, null, 2, 5, 1, true, 'daemon')")
    rows = db.service("select * from public.job_workers where worker_id = 'w1'")
    assert len(rows) == 1
    row = rows[0]
    assert (row["hostname"], row["version"], row["concurrency"]) == ("host-a", "1.0.0", 3)
    assert (row["in_flight"], row["jobs_done"], row["jobs_failed"]) == (2, 5, 1)
    assert row["realtime_connected"] is True and row["mode"] == "daemon"
    assert row["last_seen_at"] > first["last_seen_at"]
    assert row["started_at"] == first["started_at"]

    db.service("select public.register_worker('w-stopped', p_stopped => true)")
    db.service("select public.register_worker('w-gone')")
    with db.admin() as conn:
        conn.execute("update public.job_workers set last_seen_at = now() - interval '5 minutes'"
                     " where worker_id = 'w-gone'")
    active = db.service("select worker_id, in_flight from public.active_workers")
    assert [(r["worker_id"], r["in_flight"]) for r in active] == [("w1", 2)]


@pytest.mark.parametrize("table", ["job_queue", "job_workers"])
def test_queue_tables_and_their_columns_carry_comments(db: Database, table: str) -> None:
    relation = f"public.{table}"
    with db.admin() as conn:
        rows = conn.execute(
            "select a.attname, col_description(a.attrelid, a.attnum) as comment"
            " from pg_attribute a where a.attrelid = to_regclass(%s)"
            " and a.attnum > 0 and not a.attisdropped", (relation,)
        ).fetchall()
        comment = conn.execute("select obj_description(to_regclass(%s), 'pg_class') as c",
                               (relation,)).fetchone()
    assert rows and comment is not None and comment["c"]
    missing = sorted(r["attname"] for r in rows if not r["comment"])
    assert missing == []


@pytest.mark.parametrize("relation", [
    "image_generations", "images", "models", "job_workers", "queue_health", "queue_summary",
    "failed_jobs_recent", "stuck_jobs", "active_workers",
])
def test_tables_and_views_carry_comments(db: Database, relation: str) -> None:
    comment = db.scalar("select obj_description(to_regclass(%s), 'pg_class')",
                        (f"public.{relation}",))
    assert comment


def test_rpcs_carry_comments(db: Database) -> None:
    rows = db.service(
        "select p.proname, obj_description(p.oid, 'pg_proc') as comment from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'"
        " and p.proname not in ('set_updated_at')"
    )
    assert rows
    assert sorted(r["proname"] for r in rows if not r["comment"]) == []
