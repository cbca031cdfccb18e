"""claim_next_job / claim_jobs: atomic under concurrency, in claim order, filtered."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.db.dbkit import Database, switch_role

JOBS = 2000
CLAIMERS = 8


def _seed_pending(db: Database, count: int) -> set[str]:
    with db.admin() as conn:
        rows = conn.execute(
            "insert into public.job_queue (job_type, payload)"
            " select 'generate-image', jsonb_build_object('n', n)"
            " from generate_series(1, %s) n returning id",
            (count,),
        ).fetchall()
    return {str(r["id"]) for r in rows}


def _run_claimers(db: Database, call: Callable[[int], str],
                  params: Callable[[int], tuple[object, ...]]) -> dict[int, list[str]]:
    """Each claimer: its own authenticator connection, one PostgREST-style transaction per
    call as service_role, until a call comes back empty."""
    start = threading.Barrier(CLAIMERS)

    def claimer(i: int) -> list[str]:
        got: list[str] = []
        with db.connect("authenticator", autocommit=False) as conn:
            start.wait(timeout=30)
            for _ in range(JOBS + 1):  # bounded: never more calls than jobs
                with conn.transaction():
                    switch_role(conn, "service_role")
                    rows = conn.execute(call(i).encode(), params(i)).fetchall()
                if not rows:
                    break
                got.extend(str(r["id"]) for r in rows)
        return got

    with ThreadPoolExecutor(CLAIMERS) as pool:
        results = list(pool.map(claimer, range(CLAIMERS)))
    return dict(enumerate(results))


def _assert_each_claimed_once(db: Database, seeded: set[str],
                              claimed: dict[int, list[str]]) -> None:
    counts = Counter(job_id for ids in claimed.values() for job_id in ids)
    duplicates = {job_id: n for job_id, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} jobs claimed more than once"
    assert set(counts) == seeded, f"lost: {len(seeded - set(counts))}"
    assert sum(1 for ids in claimed.values() if ids) >= 2, "claims did not run concurrently"
    with db.admin() as conn:
        rows = conn.execute(
            "select id::text, status, attempt_number, locked_by, locked_until > now() as leased"
            " from public.job_queue"
        ).fetchall()
    owner = {job_id: f"w{i}" for i, ids in claimed.items() for job_id in ids}
    for row in rows:
        assert row["status"] == "processing"
        assert row["attempt_number"] == 1
        assert row["leased"] is True
        assert row["locked_by"] == owner[row["id"]]


def test_concurrent_claim_next_job_claims_every_job_exactly_once(db: Database) -> None:
    seeded = _seed_pending(db, JOBS)
    claimed = _run_claimers(
        db,
        lambda _i: "select * from public.claim_next_job(null, %s, 300)",
        lambda i: (f"w{i}",),
    )
    assert all(len(ids) <= JOBS for ids in claimed.values())
    _assert_each_claimed_once(db, seeded, claimed)


def test_concurrent_claim_jobs_batches_claim_every_job_exactly_once(db: Database) -> None:
    seeded = _seed_pending(db, JOBS)
    claimed = _run_claimers(
        db,
        lambda _i: "select * from public.claim_jobs(10, null, %s, 300)",
        lambda i: (f"w{i}",),
    )
    _assert_each_claimed_once(db, seeded, claimed)


def test_claim_jobs_respects_the_limit(db: Database) -> None:
    _seed_pending(db, 25)
    first = db.service("select * from public.claim_jobs(10, null, 'w1', 300)")
    second = db.service("select * from public.claim_jobs(10, null, 'w1', 300)")
    third = db.service("select * from public.claim_jobs(10, null, 'w1', 300)")
    assert [len(first), len(second), len(third)] == [10, 10, 5]
    assert db.service("select * from public.claim_jobs(10, null, 'w1', 300)") == []


def test_claim_order_is_priority_then_scheduled_at_then_created_at(db: Database) -> None:
    # (label, priority, scheduled seconds ago, created seconds ago)
    specs = [
        ("low-old", 0, 500, 900),
        ("high-late", 5, 10, 20),
        ("high-early-newer", 5, 100, 30),
        ("high-early-older", 5, 100, 40),
        ("mid", 1, 50, 60),
    ]
    ids: dict[str, str] = {}
    with db.admin() as conn, conn.transaction():  # one now() for every row
        for label, priority, sched_ago, created_ago in specs:
            row = conn.execute(
                "insert into public.job_queue"
                " (job_type, payload, priority, scheduled_at, created_at)"
                " values ('generate-image', jsonb_build_object('label', %s::text), %s,"
                " now() - make_interval(secs => %s), now() - make_interval(secs => %s))"
                " returning id::text",
                (label, priority, sched_ago, created_ago),
            ).fetchone()
            assert row is not None
            ids[row["id"]] = label
    order = []
    while (job := db.claim()) is not None:
        order.append(ids[str(job["id"])])
    assert order == ["high-early-older", "high-early-newer", "high-late", "mid", "low-old"]


def test_future_scheduled_job_is_not_claimable_until_due(db: Database) -> None:
    job_id = db.enqueue(scheduled_at="2999-01-01T00:00:00Z")
    assert db.claim() is None
    assert db.job(job_id)["status"] == "pending"
    with db.admin() as conn:
        conn.execute(
            "update public.job_queue set scheduled_at = now() - interval '1 second' where id = %s",
            (job_id,),
        )
    job = db.claim()
    assert job is not None and job["id"] == job_id


def test_job_types_filter(db: Database) -> None:
    gen = db.enqueue("generate-image", priority=9)
    dl = db.enqueue("download-image")
    job = db.claim(job_types=["download-image"])
    assert job is not None and job["id"] == dl
    assert db.claim(job_types=["download-image", "cleanup-storage"]) is None
    job = db.claim(job_types=["generate-image"])
    assert job is not None and job["id"] == gen


def test_claim_sets_lease_attempt_and_start(db: Database) -> None:
    job_id = db.enqueue()
    with db.as_role("service_role") as conn:
        now = conn.execute("select now() as t").fetchone()
        rows = conn.execute("select * from public.claim_next_job(null, 'w7', 120)").fetchall()
    assert now is not None and len(rows) == 1
    job = rows[0]
    assert job["id"] == job_id
    assert job["status"] == "processing"
    assert job["attempt_number"] == 1
    assert job["locked_by"] == "w7"
    assert job["started_at"] == now["t"]
    assert (job["locked_until"] - now["t"]).total_seconds() == pytest.approx(120)


def test_claim_next_job_without_arguments_behaves_like_variant_g(db: Database) -> None:
    job_id = db.enqueue(payload={"generation_id": str(uuid.uuid4())})
    rows = db.service("select id, job_type, payload, attempt_number, max_attempts"
                      " from public.claim_next_job()")
    assert len(rows) == 1
    assert rows[0]["id"] == job_id
    assert rows[0]["attempt_number"] == 1
    assert rows[0]["max_attempts"] == 3
    assert db.service("select * from public.claim_next_job()") == []


@pytest.mark.parametrize(("call", "limit"), [
    ("select * from public.claim_jobs(2, null, 'w1', 300)", 2),
    ("select * from public.claim_next_job(null, 'w1', 300)", 1),
])
def test_claim_limit_holds_whatever_plan_the_planner_picks(db: Database, call: str,
                                                           limit: int) -> None:
    """A nested-loop plan rescans a locking subquery; the claim must still stop at the limit."""
    _seed_pending(db, 10)
    with db.as_role("service_role") as conn:
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_hashagg",
                        "enable_material", "enable_sort", "enable_seqscan"):
            conn.execute("select set_config(%s, 'off', true)", (setting,))
        rows = conn.execute(call.encode()).fetchall()
    assert len(rows) == limit
    assert db.scalar("select count(*) from public.job_queue where status = 'processing'") == limit
