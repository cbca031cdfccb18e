"""At 1,000,000 rows of finished history, the hot queries stay index scans.

The plans are those of the statements inside the RPCs as they really run: auto_explain
(loaded by the superuser, nested statements on, JSON, logged at NOTICE level so they reach
this client) records every statement the functions execute.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from tests.db.conftest import create_database, drop_database
from tests.db.dbkit import Conn, Database, claims

HISTORY = 1_000_000
GENERATIONS = 200_000
PENDING_INDEXES = {"job_queue_claim_idx", "job_queue_pending_scheduled_idx"}
LIVE_INDEXES = PENDING_INDEXES | {
    "job_queue_lease_idx", "job_queue_generation_live_idx", "job_queue_dedupe_live_key",
}


def _load_history(db: Database) -> dict[str, uuid.UUID]:
    """Finished history, fast: one insert ... select per table, FK triggers off (replica)."""
    user = db.make_user()
    db.set_in_flight_limit(0)  # one user with a dozen generations in flight
    with db.admin() as conn, conn.transaction():
        conn.execute("set local session_replication_role = replica")
        conn.execute(
            "insert into public.image_generations (user_id, prompt, status, created_at, updated_at)"
            " select %s, 'p', 'completed', now() - make_interval(mins => n),"
            " now() - make_interval(mins => n) from generate_series(1, %s) n",
            (user, GENERATIONS),
        )
        conn.execute(
            "insert into public.job_queue (job_type, payload, status, attempt_number,"
            " scheduled_at, started_at, completed_at, created_at, updated_at)"
            " select 'generate-image', %s,"
            " case when n %% 10 = 0 then 'failed' else 'completed' end, 1, t, t, t, t, t"
            " from generate_series(1, %s) n,"
            " lateral (select now() - make_interval(secs => n) as t) x",
            (Jsonb({"generation_id": str(uuid.UUID(int=0))}), HISTORY),
        )
    live = {"user": user, "generation": db.make_generation(user, status="processing")}
    for i in range(40):
        db.enqueue(payload={"n": i}, priority=i % 3,
                   scheduled_at="2999-01-01T00:00:00Z" if i % 4 == 0 else None)
    for i in range(8):
        gen = db.make_generation(user, status="processing")
        # The first expired one is on its last attempt: requeue fails it and its generation.
        db.enqueue(payload={"generation_id": str(gen)}, priority=10,
                   max_attempts=1 if i == 0 else 3)
        claimed = db.claim(f"w{i}")
        assert claimed is not None
        if i < 3:
            db.expire_lease(claimed["id"])
    db.enqueue(payload={"generation_id": str(live["generation"])})
    with db.admin() as conn:
        conn.execute("analyze public.job_queue")
        conn.execute("analyze public.image_generations")
    return live


@contextmanager
def _explained(db: Database) -> Iterator[tuple[Conn, list[dict[str, Any]]]]:
    """A superuser session logging every statement's plan; its work is rolled back."""
    plans: list[dict[str, Any]] = []

    def collect(diag: Any) -> None:
        text = diag.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1]))

    with db.admin() as conn:
        conn.add_notice_handler(collect)
        conn.execute("load 'auto_explain'")
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_format", "json"), ("log_level", "notice")):
            conn.execute("select set_config(%s, %s, false)", (f"auto_explain.{setting}", value))
        with conn.transaction(force_rollback=True):
            yield conn, plans


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _scans(plans: list[dict[str, Any]], keep: Callable[[str], bool]
           ) -> list[tuple[str, dict[str, Any]]]:
    """(query text, scan node) of every scan whose statement passes ``keep``."""
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in plans:
        query = entry.get("Query Text", "")
        if keep(query):
            found.extend(
                (query, node) for node in _nodes(entry["Plan"]) if "Scan" in node["Node Type"]
            )
    return found


def _assert_indexed(scans: list[tuple[str, dict[str, Any]]], expected: set[str]) -> None:
    used: set[str] = set()
    for query, node in scans:
        relation, kind = node.get("Relation Name"), node["Node Type"]
        assert not (kind == "Seq Scan" and relation in ("job_queue", "image_generations")), (
            f"Seq Scan on {relation} in: {query.strip()[:200]}"
        )
        index = node.get("Index Name", "")
        if index.startswith("job_queue_"):
            by_id = index == "job_queue_pkey" and "Index Cond" in node
            assert by_id or index in LIVE_INDEXES, f"{index} scanned for: {query.strip()[:200]}"
            used.add(index)
    assert used & expected, f"none of {expected} used (used: {used})"


@pytest.fixture(scope="module")
def history(template_db: Database) -> Iterator[tuple[Database, dict[str, uuid.UUID]]]:
    db = create_database(template_db.cluster, "t_scale_history", template=template_db.name)
    started = time.monotonic()
    live = _load_history(db)
    assert time.monotonic() - started < 60, "loading the history is too slow for this suite"
    yield db, live
    drop_database(template_db.cluster, db.name)


def test_claim_uses_a_pending_index(history: tuple[Database, dict[str, uuid.UUID]]) -> None:
    db, _ = history
    with _explained(db) as (conn, plans):
        rows = conn.execute("select * from public.claim_jobs(10, null, 'wx', 300)").fetchall()
        assert len(rows) == 10
        conn.execute("select * from public.claim_next_job(array['download-image'], 'wx', 300)")
    _assert_indexed(_scans(plans, lambda q: "for update skip locked" in q), PENDING_INDEXES)


def test_requeue_scan_uses_an_index(history: tuple[Database, dict[str, uuid.UUID]]) -> None:
    db, _ = history
    with _explained(db) as (conn, plans):
        row = conn.execute("select public.requeue_stale_jobs() as n").fetchone()
        assert row is not None and row["n"] == 3
    scans = _scans(plans, lambda q: "requeue_stale_jobs" not in q)
    assert any(node.get("Relation Name") == "image_generations" or "image_generations" in q
               for q, node in scans), "the generations were not updated"
    _assert_indexed(scans, {"job_queue_lease_idx", "job_queue_generation_live_idx"})


def test_cancel_generation_job_lookup_uses_an_index(
    history: tuple[Database, dict[str, uuid.UUID]]
) -> None:
    db, live = history
    with _explained(db) as (conn, plans):
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims("service_role"),))
        conn.execute("select * from public.cancel_generation(%s)", (live["generation"],))
        row = conn.execute(
            "select count(*) as n from public.job_queue where payload ->> 'generation_id' = %s"
            " and status = 'cancelled'", (str(live["generation"]),)
        ).fetchone()
        assert row is not None and row["n"] == 1
    scans = _scans(plans, lambda q: "update public.job_queue" in q)
    _assert_indexed(scans, {"job_queue_generation_live_idx"})


def test_fail_abandoned_generations_uses_indexes(
    history: tuple[Database, dict[str, uuid.UUID]]
) -> None:
    db, _ = history
    with _explained(db) as (conn, plans):
        conn.execute("select public.fail_abandoned_generations()")
    _assert_indexed(_scans(plans, lambda q: "abandoned" in q), {"job_queue_generation_live_idx"})

