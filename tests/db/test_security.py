"""The security matrix: who may call which RPC and read which rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.db.conftest import create_database, drop_database
from tests.db.dbkit import WORKER_RPCS, Database

VIEWS = ("queue_health", "queue_summary", "failed_jobs_recent", "stuck_jobs", "active_workers")


@dataclass(frozen=True)
class World:
    db: Database
    alice: uuid.UUID
    bob: uuid.UUID
    alice_gen: uuid.UUID
    bob_gen: uuid.UUID


@pytest.fixture(scope="module")
def world(template_db: Database) -> Iterator[World]:
    """Two users, each with a generation, an image and a job (read-only tests share it)."""
    db = create_database(template_db.cluster, "t_security_matrix", template=template_db.name)
    alice, bob = db.make_user(), db.make_user()
    gens = {}
    for user in (alice, bob):
        gen = db.make_generation(user, status="completed")
        gens[user] = gen
        with db.admin() as conn:
            conn.execute(
                "insert into public.images (generation_id, user_id, storage_path)"
                " values (%s, %s, %s)",
                (gen, user, f"{user}/{gen}.webp"),
            )
        db.enqueue(payload={"generation_id": str(gen), "user_id": str(user)})
    db.service("select public.register_worker('w1', 'host', '1.0', 3)")
    yield World(db, alice, bob, gens[alice], gens[bob])
    drop_database(template_db.cluster, db.name)


def _select_all(relation: str) -> sql.Composed:
    return sql.SQL("select * from public.{}").format(sql.Identifier(relation))


def _sqlstate(db: Database, role: str, query: str | sql.Composed,
              sub: uuid.UUID | None = None, params: tuple[Any, ...] | None = None) -> str | None:
    """The SQLSTATE a PostgREST-style call raises, or None when it succeeds."""
    try:
        with db.as_role(role, sub) as conn:
            conn.execute(query.encode() if isinstance(query, str) else query, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


@pytest.mark.parametrize("rpc", sorted(WORKER_RPCS))
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_api_roles_cannot_run_worker_rpcs(world: World, role: str, rpc: str) -> None:
    sub = world.alice if role == "authenticated" else None
    assert _sqlstate(world.db, role, WORKER_RPCS[rpc], sub) == "42501"


@pytest.mark.parametrize("rpc", sorted(WORKER_RPCS))
def test_service_role_runs_worker_rpcs(world: World, rpc: str) -> None:
    # Each call rolls back with its transaction only if it fails; the ones here are harmless.
    assert _sqlstate(world.db, "service_role", WORKER_RPCS[rpc] + " limit 0") is None


@pytest.mark.parametrize("table", ["image_generations", "images", "job_queue"])
def test_users_read_only_their_own_rows(world: World, table: str) -> None:
    column = "created_by" if table == "job_queue" else "user_id"
    query = sql.SQL("select {} as owner from public.{}").format(
        sql.Identifier(column), sql.Identifier(table)
    )
    for user in (world.alice, world.bob):
        with world.db.as_role("authenticated", user) as conn:
            rows = conn.execute(query).fetchall()
        assert [r["owner"] for r in rows] == [user]


@pytest.mark.parametrize("table", ["image_generations", "images", "job_queue", "job_workers"])
def test_anon_reads_no_user_tables(world: World, table: str) -> None:
    assert _sqlstate(world.db, "anon", _select_all(table)) == "42501"


@pytest.mark.parametrize("view", VIEWS)
def test_anon_reads_no_monitoring_view(world: World, view: str) -> None:
    assert _sqlstate(world.db, "anon", _select_all(view)) == "42501"


def test_authenticated_reads_no_worker_registry(world: World) -> None:
    for relation in ("job_workers", "active_workers"):
        query = _select_all(relation)
        assert _sqlstate(world.db, "authenticated", query, world.alice) == "42501", relation


@pytest.mark.parametrize("view", ["queue_health", "queue_summary", "failed_jobs_recent",
                                  "stuck_jobs"])
def test_users_read_the_job_views_of_their_own_jobs(world: World, view: str) -> None:
    """The shared client library reads them as a signed-in user (issue 11 point 8)."""
    with world.db.admin() as conn:
        conn.execute("update public.job_queue set status = 'failed', completed_at = now(),"
                     " error_message = 'boom'")
    try:
        seen = {}
        for user in (world.alice, world.bob):
            with world.db.as_role("authenticated", user) as conn:
                seen[user] = conn.execute(_select_all(view)).fetchall()
        if view == "queue_health":
            assert [r["count"] for r in seen[world.alice]] == [1]
        if view == "failed_jobs_recent":
            for user in (world.alice, world.bob):
                assert [r["payload"]["user_id"] for r in seen[user]] == [str(user)]
    finally:
        with world.db.admin() as conn:
            conn.execute("update public.job_queue set status = 'pending', completed_at = null,"
                         " error_message = null")


def test_user_views_show_only_own_jobs(world: World) -> None:
    with world.db.as_role("authenticated", world.alice) as conn:
        summary = conn.execute("select * from public.queue_summary").fetchone()
    assert summary is not None and summary["pending"] == 1


def test_models_are_readable_by_anon_and_users(world: World) -> None:
    for role, sub in (("anon", None), ("authenticated", world.alice)):
        with world.db.as_role(role, sub) as conn:
            rows = conn.execute("select replicate_id from public.models").fetchall()
        assert len(rows) == 14
    assert _sqlstate(world.db, "anon", "delete from public.models") == "42501"


def test_users_cannot_write_jobs_or_images(world: World) -> None:
    alice = world.alice
    statements = [
        "insert into public.job_queue (job_type, payload) values ('generate-image', '{}')",
        "update public.job_queue set priority = 100",
        "insert into public.images (user_id, storage_path) values (auth.uid(), 'x')",
        "update public.image_generations set replicate_prediction_id = 'x'",
        "update public.job_queue set status = 'completed'",
    ]
    for statement in statements:
        assert _sqlstate(world.db, "authenticated", statement, alice) == "42501", statement


def test_users_cannot_create_generations_for_others(world: World) -> None:
    statement = "insert into public.image_generations (user_id, prompt) values (%s, 'x')"
    state = _sqlstate(world.db, "authenticated", statement, world.alice, (world.bob,))
    assert state == "42501"


def test_service_role_reads_everything(world: World) -> None:
    counts = {
        "image_generations": 2, "images": 2, "job_queue": 2, "job_workers": 1, "models": 14,
    }
    with world.db.as_role("service_role") as conn:
        for table, expected in counts.items():
            query = sql.SQL("select count(*) as n from public.{}").format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            assert row is not None and row["n"] == expected, table
        for view in VIEWS:
            assert conn.execute(_select_all(view)).fetchall() is not None


def test_service_role_writes_what_the_worker_writes(db: Database) -> None:
    user = db.make_user()
    gen = db.make_generation(user)
    with db.as_role("service_role") as conn:
        conn.execute("update public.image_generations set status = 'downloading' where id = %s",
                     (gen,))
        conn.execute(
            "insert into public.images (generation_id, user_id, storage_path, format)"
            " values (%s, %s, %s, 'webp')", (gen, user, f"{user}/{gen}.webp"),
        )
    # Storing the image completes the generation in the same transaction.
    assert db.generation(gen)["status"] == "completed"
    assert db.scalar("select count(*) from public.images where generation_id = %s", (gen,)) == 1


def test_cancel_generation_only_by_owner_or_service_role(db: Database) -> None:
    alice, bob = db.make_user(), db.make_user()
    gen = db.make_generation(alice)
    query = "select public.cancel_generation(%s)"
    assert _sqlstate(db, "anon", query, None, (gen,)) == "42501"
    assert _sqlstate(db, "authenticated", query, bob, (gen,)) == "PT404"
    assert db.generation(gen)["status"] == "queued"
    assert _sqlstate(db, "authenticated", query, alice, (gen,)) is None
    assert db.generation(gen)["status"] == "cancelled"
    other = db.make_generation(bob)
    rows = db.service("select status from public.cancel_generation(%s)", (other,))
    assert rows[0]["status"] == "cancelled"
    assert _sqlstate(db, "service_role", query, None, (uuid.uuid4(),)) == "PT404"
