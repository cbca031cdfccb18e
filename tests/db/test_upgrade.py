"""Upgrading the deployed variants M and G in place: no data loss, the target RPCs only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.db.conftest import load_variant
from tests.db.dbkit import RPC_NAMES, Database, named_call, rerun_migrations
from worker import migrate

GEN_STATUSES = ("pending", "processing", "completed", "failed")
JOB_STATUSES = {
    "m": ("pending", "processing", "completed", "failed", "cancelled"),
    "g": ("pending", "processing", "completed", "failed"),
}
# What each variant calls the attempt counter, and the key columns it has.
ATTEMPTS = {"m": "attempts", "g": "attempt_number"}
JOB_KEYS = {
    "m": sql.SQL(
        "select id, job_type, payload, status, coalesce(priority, 0) as priority,"
        " {attempts} as attempts, max_attempts, scheduled_at, started_at, completed_at,"
        " error_message, error_details, created_by, created_at from public.job_queue order by id"
    ),
    "g": sql.SQL(
        "select id, job_type, payload, status, priority, {attempts} as attempts, max_attempts,"
        " started_at, completed_at, error_message, result, created_at"
        " from public.job_queue order by id"
    ),
}
OTHER_KEYS = {
    "image_generations": "select id, user_id, prompt, model, width, height, status,"
                         " error_message, created_at, completed_at"
                         " from public.image_generations order by id",
    "images": "select id, generation_id, user_id, storage_path, public_url, created_at"
              " from public.images order by id",
    "models": "select id, name, replicate_id, is_active from public.models order by id",
}


def _seed(db: Database, variant: str) -> dict[str, Any]:
    """Rows in every status, the way the old system left them."""
    users = [db.make_user(), db.make_user()]
    with db.admin() as conn, conn.transaction():
        conn.execute(
            "insert into public.models (name, replicate_id, description, is_active) values"
            " ('Flux (ours)', 'black-forest-labs/flux-schnell', 'renamed by the operator', false),"
            " ('SDXL', 'stability-ai/sdxl', null, true)"
        )
        gens: dict[str, uuid.UUID] = {}
        for i, status in enumerate(GEN_STATUSES):
            row = conn.execute(
                "insert into public.image_generations (user_id, prompt, model, status, created_at)"
                " values (%s, %s, 'black-forest-labs/flux-schnell', %s,"
                " now() - make_interval(hours => %s))"
                " returning id",
                (users[i % 2], f"prompt {status}", status, 10 - i),
            ).fetchone()
            assert row is not None
            gens[status] = row["id"]
        # The edge function's retries could write two images for one generation.
        for _ in range(2):
            conn.execute(
                "insert into public.images (generation_id, user_id, storage_path, public_url)"
                " values (%s, %s, %s, 'https://example.test/x.webp')",
                (gens["completed"], users[0], f"{users[0]}/{gens['completed']}.webp"),
            )
        for i, status in enumerate(JOB_STATUSES[variant]):
            _insert_job(conn, variant, status, i, gens, users)
    return {"users": users, "generations": gens}


def _insert_job(conn: psycopg.Connection[Any], variant: str, status: str, i: int,
                gens: dict[str, uuid.UUID], users: list[uuid.UUID]) -> None:
    payload = Jsonb({"generation_id": str(gens["processing"]), "user_id": str(users[0])})
    done = status in ("completed", "failed", "cancelled")
    attempts = {"pending": 1, "processing": 0 if variant == "m" else 1, "failed": 3}.get(status, 1)
    common = {
        "job_type": "generate-image" if i % 2 == 0 else "download-image",
        "payload": payload, "status": status, "attempts": attempts,
        "error": "replicate 503" if status in ("pending", "failed") else None,
        "ago": 60 - i,
    }
    if variant == "m":
        conn.execute(
            "insert into public.job_queue (job_type, payload, status, priority, attempts,"
            " scheduled_at, started_at, completed_at, error_message, error_details, created_by,"
            " created_at, updated_at) values (%(job_type)s, %(payload)s, %(status)s, %(priority)s,"
            " %(attempts)s, now() - make_interval(mins => %(ago)s), %(started)s, %(completed)s,"
            " %(error)s, %(details)s, %(created_by)s, now() - make_interval(mins => %(ago)s),"
            " now() - make_interval(mins => 20))",
            {**common, "priority": None if status == "pending" else i,
             "started": None if status == "pending" else _ago(30),
             "completed": _ago(5) if done else None,
             "details": Jsonb({"status": 503}) if common["error"] else None,
             "created_by": users[i % 2] if i % 3 else None},
        )
    else:
        conn.execute(
            "insert into public.job_queue (job_type, payload, status, priority, attempt_number,"
            " started_at, completed_at, error_message, result, created_at, updated_at)"
            " values (%(job_type)s, %(payload)s, %(status)s, %(priority)s, %(attempts)s,"
            " %(started)s, %(completed)s, %(error)s, %(result)s,"
            " now() - make_interval(mins => %(ago)s), now() - make_interval(mins => 20))",
            {**common, "priority": i, "started": None if status == "pending" else _ago(30),
             "completed": _ago(5) if done else None,
             "result": Jsonb({"ok": True}) if status == "completed" else None},
        )


def _ago(minutes: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def _snapshot(db: Database, variant: str, attempts_column: str) -> dict[str, list[dict[str, Any]]]:
    """Key columns of every table, in a stable order."""
    jobs = JOB_KEYS[variant].format(attempts=sql.Identifier(attempts_column))
    with db.admin() as conn:
        snap = {"job_queue": [dict(r) for r in conn.execute(jobs).fetchall()]}
        for table, query in OTHER_KEYS.items():
            snap[table] = [dict(r) for r in conn.execute(query.encode()).fetchall()]
    return snap


def _columns(db: Database, table: str) -> set[tuple[Any, ...]]:
    with db.admin() as conn:
        rows = conn.execute(
            "select column_name, data_type, is_nullable, column_default"
            " from information_schema.columns where table_schema = 'public' and table_name = %s",
            (table,),
        ).fetchall()
    return {tuple(r.values()) for r in rows}


@pytest.fixture(params=["m", "g"])
def upgraded(request: pytest.FixtureRequest, db_factory: Callable[..., Database]
             ) -> tuple[str, Database, dict[str, Any], dict[str, Any]]:
    variant: str = request.param
    db = db_factory(migrated=False)
    load_variant(db, variant)
    seeded = _seed(db, variant)
    before = _snapshot(db, variant, ATTEMPTS[variant])
    migrate.apply(db.url("postgres"))
    return variant, db, seeded, before


def test_upgrade_keeps_every_row(upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]]
                                 ) -> None:
    variant, db, _, before = upgraded
    after = _snapshot(db, variant, "attempt_number")
    for table in ("job_queue", "image_generations", "images"):
        assert len(after[table]) == len(before[table]), table
        assert after[table] == before[table], table
    # The catalogue keeps the operator's rows as they were and gains the missing models.
    assert all(row in after["models"] for row in before["models"])
    assert len(after["models"]) == 14
    assert len(before["job_queue"]) == len(JOB_STATUSES[variant])
    if variant == "g":
        assert db.scalar("select count(*) from public.job_queue"
                         " where scheduled_at is distinct from created_at") == 0


def test_upgrade_leaves_one_function_per_rpc(
    upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]]
) -> None:
    _, db, _, _ = upgraded
    with db.admin() as conn:
        rows = conn.execute(
            "select p.proname, count(*) as n from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = 'public' and p.proname = any(%s) group by p.proname",
            (list(RPC_NAMES),),
        ).fetchall()
    assert {r["proname"]: r["n"] for r in rows} == dict.fromkeys(RPC_NAMES, 1)


def test_upgraded_job_queue_columns_equal_a_fresh_schema(
    upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]],
    db_factory: Callable[..., Database],
) -> None:
    _, db, _, _ = upgraded
    fresh, got = _columns(db_factory(), "job_queue"), _columns(db, "job_queue")
    assert got == fresh, {"missing": fresh - got, "unexpected": got - fresh}


def test_upgraded_database_runs_the_target_rpcs(
    upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]]
) -> None:
    variant, db, seeded, _ = upgraded
    # The old processing row has no lease and was last touched 20 minutes ago.
    assert db.service("select public.requeue_stale_jobs() as n")[0]["n"] == 1
    # Due now: the requeued job and the old pending one.
    claimed = db.service("select * from public.claim_jobs(10, null, 'w1', 60)")
    assert len(claimed) == 2
    for job in claimed:
        assert job["locked_by"] == "w1" and job["status"] == "processing"
    done = db.rpc("complete_job", job_id=claimed[0]["id"], result={"ok": 1}, worker_id="w1")
    assert done[0]["status"] == "completed"
    with pytest.raises(psycopg.Error) as caught:
        db.rpc("complete_job", job_id=claimed[1]["id"], result={}, worker_id="w2")
    assert caught.value.sqlstate == "PW001"
    # The operator deactivated flux-schnell in this deployment: the catalogue decides.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.enqueue(payload={"user_id": str(seeded["users"][1])})
    new = db.enqueue(payload={"user_id": str(seeded["users"][1]), "model_id": "stability-ai/sdxl"},
                     dedupe_key="k")
    assert db.job(new)["created_by"] == seeded["users"][1]
    # The generation status set grew (additive): queued/downloading/cancelled are accepted.
    gen = seeded["generations"]["pending"]
    for status in ("queued", "downloading", "cancelled"):
        with db.admin() as conn:
            conn.execute("update public.image_generations set status = %s where id = %s",
                         (status, gen))
    if variant == "m":  # the old catalogue rows are kept; the community model got its version
        assert db.scalar("select name from public.models"
                         " where replicate_id = 'black-forest-labs/flux-schnell'") == "Flux (ours)"
    assert db.scalar("select version from public.models where replicate_id = 'stability-ai/sdxl'")


def test_upgrade_closes_the_old_holes(
    upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]]
) -> None:
    _, db, seeded, _ = upgraded
    user = seeded["users"][0]
    query, params = named_call("enqueue_job", job_type="generate-image", payload={})
    with pytest.raises(psycopg.Error) as caught, db.as_role("authenticated", user) as conn:
        conn.execute(query, params)
    assert caught.value.sqlstate == "42501"
    with pytest.raises(psycopg.Error) as caught, db.as_role("anon") as conn:
        conn.execute("select * from public.job_queue")
    assert caught.value.sqlstate == "42501"
    with db.as_role("authenticated", user) as conn:
        rows = conn.execute("select user_id from public.image_generations").fetchall()
        jobs = conn.execute("select created_by from public.job_queue").fetchall()
    assert rows and {r["user_id"] for r in rows} == {user}
    assert all(j["created_by"] == user for j in jobs)


def test_upgrade_is_idempotent(upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]]
                               ) -> None:
    variant, db, _, before = upgraded
    first = _snapshot(db, variant, "attempt_number")
    rerun_migrations(db.url("postgres"))
    assert _snapshot(db, variant, "attempt_number") == first
    assert first["job_queue"] == before["job_queue"]


def _table_shape(db: Database) -> dict[str, Any]:
    """Checks, indexes, storage options and Realtime membership of job_queue."""
    with db.admin() as conn:
        checks = conn.execute(
            "select conname, pg_get_constraintdef(oid) as def from pg_constraint"
            " where conrelid = 'public.job_queue'::regclass and contype in ('c', 'f', 'p')"
        ).fetchall()
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes"
            " where schemaname = 'public' and tablename = 'job_queue'"
        ).fetchall()
        options = conn.execute(
            "select reloptions from pg_class where oid = 'public.job_queue'::regclass"
        ).fetchone()
        published = conn.execute(
            "select array_agg(tablename::text order by tablename) as t from pg_publication_tables"
            " where pubname = 'supabase_realtime' and schemaname = 'public'"
        ).fetchone()
    assert options is not None and published is not None
    return {
        "constraints": {(r["conname"], r["def"]) for r in checks},
        "indexes": {(r["indexname"], r["indexdef"]) for r in indexes},
        "options": sorted(options["reloptions"] or []),
        "published": published["t"],
    }


def test_upgraded_job_queue_has_the_fresh_constraints_indexes_and_settings(
    upgraded: tuple[str, Database, dict[str, Any], dict[str, Any]],
    db_factory: Callable[..., Database],
) -> None:
    _, db, _, _ = upgraded
    fresh, got = _table_shape(db_factory()), _table_shape(db)
    assert got["constraints"] == fresh["constraints"]  # the old checks are replaced
    assert fresh["indexes"] <= got["indexes"]  # the deployment's own indexes may stay
    assert got["options"] == fresh["options"]
    assert any(o.startswith("autovacuum_vacuum_scale_factor=") for o in got["options"])
    assert got["published"] == fresh["published"] == ["image_generations", "job_queue"]
