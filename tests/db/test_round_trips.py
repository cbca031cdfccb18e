"""The combined RPCs of 20261205000100_fewer_round_trips.sql on PostgreSQL 15 and 17: one
transaction each, fenced (PW001) and answering a repeated call, the SQL rules of the
boundary kept (PT410, finished stays finished), and no deadlock with a concurrent cancel
(a generation's row is always locked before its jobs' rows).

The behaviour each worker call relies on is also in the contract suite (tests/contract,
against the in-memory double and the stack); here: what needs a second session or a second
server."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.db.dbkit import Conn, Database

LEASE = 300


def _call(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _service(db: Database, query: str, *params: Any) -> Any:
    with db.as_role("service_role") as conn:
        return _call(conn, query, *params)


def _generate_job(db: Database, worker: str = "w1") -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(user, generation, its generate-image job claimed by ``worker`` through claim_work)."""
    user = db.make_user()
    gid = db.make_generation(user)
    job_id = db.enqueue(payload={"generation_id": str(gid), "user_id": str(user)})
    answer = _service(db, "select public.claim_work(1, null, %s, %s)", worker, LEASE)
    assert [j["id"] for j in answer["jobs"]] == [str(job_id)]
    return user, gid, job_id


def _finish(db: Database, job_id: uuid.UUID, gid: uuid.UUID, user: uuid.UUID,
            worker: str = "w1", chain: bool = True) -> dict[str, Any]:
    return dict(_service(
        db,
        "select public.finish_prediction(%s, %s, %s, 'pred-1', 2.5, %s, %s, %s, %s)",
        job_id, worker, gid,
        Jsonb({"generation_id": str(gid), "user_id": str(user), "output_url": "https://x/y.webp"}),
        Jsonb({"prediction_id": "pred-1", "worker_id": worker, "attempt": 1}),
        chain, LEASE,
    ))


def _image(gid: uuid.UUID, user: uuid.UUID) -> Jsonb:
    return Jsonb({"generation_id": str(gid), "user_id": str(user),
                  "storage_path": f"{user}/{gid}.webp", "filename": f"{gid}.webp",
                  "format": "webp"})


def test_claim_work_starts_the_generation_and_hands_it_over(db: Database) -> None:
    _user, gid, job_id = _generate_job(db)
    row = db.generation(gid)
    assert row["status"] == "processing" and row["job_id"] == job_id
    assert db.job(job_id)["locked_by"] == "w1"


def test_claim_work_does_not_wait_for_a_locked_generation(db: Database) -> None:
    user = db.make_user()
    gid = db.make_generation(user)
    job_id = db.enqueue(payload={"generation_id": str(gid), "user_id": str(user)})
    with db.connect() as holder, holder.transaction():
        holder.execute("select 1 from public.image_generations where id = %s for update", (gid,))
        began = time.monotonic()
        answer = _service(db, "select public.claim_work(1, null, 'w1', 300)")
        assert time.monotonic() - began < 2  # no wait on the lock
    [job] = answer["jobs"]
    assert job["id"] == str(job_id) and "generation" not in job  # the handler reads it
    assert db.generation(gid)["status"] == "queued"


def test_finish_prediction_inserts_the_download_already_claimed(db: Database) -> None:
    user, gid, job_id = _generate_job(db)
    answer = _finish(db, job_id, gid, user)
    [download] = answer["jobs"]
    row = db.job(download["id"])
    assert (row["status"], row["locked_by"], row["attempt_number"]) == ("processing", "w1", 1)
    assert row["created_by"] == user and row["dedupe_key"] == f"download:{gid}"
    assert row["locked_until"] is not None and row["started_at"] is not None
    generation = db.generation(gid)
    assert generation["status"] == "downloading"
    assert generation["replicate_prediction_id"] == "pred-1"
    assert float(generation["generation_time_seconds"]) == 2.5
    job = db.job(job_id)
    assert job["status"] == "completed" and job["result"]["download_job_id"] == download["id"]
    again = _finish(db, job_id, gid, user)  # the same call, its answer lost
    assert again["download_job_id"] == answer["download_job_id"]
    assert [j["id"] for j in again["jobs"]] == [download["id"]]
    with pytest.raises(psycopg.Error) as refused:  # someone else's report
        _finish(db, job_id, gid, user, worker="w2")
    assert refused.value.sqlstate == "PW001"


def test_complete_and_claim_completes_a_batch_fenced_as_a_whole(db: Database) -> None:
    ids = [db.enqueue("download-image", {"n": n}) for n in range(4)]
    claimed = _service(db, "select public.claim_work(3, null, 'w1', 300)")
    mine = [uuid.UUID(j["id"]) for j in claimed["jobs"]]
    assert mine == ids[:3]
    with pytest.raises(psycopg.Error) as refused:  # one of them is not ours: none completes
        _service(db, "select public.complete_and_claim(%s, 'w1', %s)", [*mine, ids[3]],
                 Jsonb({"ok": True}))
    assert refused.value.sqlstate == "PW001"
    assert {db.job(i)["status"] for i in mine} == {"processing"}
    results = Jsonb([{"n": 0}, {"n": 1}, {"n": 2}])
    answer = _service(db, "select public.complete_and_claim(%s, 'w1', %s, 5)", mine, results)
    assert [db.job(i)["result"] for i in mine] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [j["id"] for j in answer["jobs"]] == [str(ids[3])]


def test_store_image_completes_generation_and_job_in_one_transaction(db: Database) -> None:
    user, gid, job_id = _generate_job(db)
    [download] = _finish(db, job_id, gid, user)["jobs"]
    result = Jsonb({"worker_id": "w1", "attempt": 1})
    answer = _service(db, "select public.store_image(%s, 'w1', %s, %s)",
                      download["id"], _image(gid, user), result)
    assert answer["image"]["generation_id"] == str(gid) and not answer["reused"]
    assert db.generation(gid)["status"] == "completed"
    assert db.job(download["id"])["status"] == "completed"
    assert db.scalar("select count(*) from public.images where generation_id = %s", (gid,)) == 1


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except psycopg.Error as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _cancel(db: Database, gid: uuid.UUID) -> Any:
    return _service(db, "select status from public.cancel_generation(%s)", gid)


def test_a_cancel_waiting_for_store_image_finds_the_generation_completed(db: Database) -> None:
    user, gid, job_id = _generate_job(db)
    [download] = _finish(db, job_id, gid, user)["jobs"]
    with db.as_role("service_role") as conn:  # store_image, not yet committed
        _call(conn, "select public.store_image(%s, 'w1', %s, %s)", download["id"],
              _image(gid, user), Jsonb({"worker_id": "w1"}))
        thread, out = _in_thread(lambda: _cancel(db, gid))
        time.sleep(0.3)
        assert thread.is_alive()  # waiting for the generation's row
    thread.join(10)
    assert out == ["completed"]  # finished stays finished; no deadlock (40P01)
    assert db.job(download["id"])["status"] == "completed"


def test_store_image_waiting_for_a_cancel_stores_nothing(db: Database) -> None:
    user, gid, job_id = _generate_job(db)
    [download] = _finish(db, job_id, gid, user)["jobs"]
    with db.as_role("service_role") as conn:  # the cancel, not yet committed
        _call(conn, "select status from public.cancel_generation(%s)", gid)
        thread, out = _in_thread(lambda: _service(
            db, "select public.store_image(%s, 'w1', %s, %s)", download["id"],
            _image(gid, user), Jsonb({"worker_id": "w1"})))
        time.sleep(0.3)
        assert thread.is_alive()
    thread.join(10)
    [error] = out
    assert isinstance(error, psycopg.Error) and error.sqlstate == "PT410"
    assert db.scalar("select count(*) from public.images where generation_id = %s", (gid,)) == 0
    assert db.job(download["id"])["status"] == "cancelled"


def test_a_cancel_racing_finish_prediction_never_deadlocks(db: Database) -> None:
    user, gid, job_id = _generate_job(db)
    with db.as_role("service_role") as conn:  # the cancel first, not yet committed
        _call(conn, "select status from public.cancel_generation(%s)", gid)
        thread, out = _in_thread(lambda: _finish(db, job_id, gid, user))
        time.sleep(0.3)
        assert thread.is_alive()
    thread.join(10)
    [error] = out
    assert isinstance(error, psycopg.Error) and error.sqlstate == "PW001"  # the job: cancelled
    assert db.generation(gid)["status"] == "cancelled"
    assert db.scalar("select count(*) from public.job_queue where job_type = 'download-image'") == 0


def test_heartbeat_worker_keeps_the_job_types_and_answers_the_live_workers(db: Database) -> None:
    peers = _service(db, "select public.heartbeat_worker('w1', p_job_types => %s)",
                     ["download-image"])
    assert [p["worker_id"] for p in peers] == ["w1"]
    assert peers[0]["job_types"] == ["download-image"]
    _service(db, "select public.heartbeat_worker('w2', p_stopped => true)")
    with db.admin() as conn:
        conn.execute("update public.job_workers set last_seen_at = now() - interval '1 hour'"
                     " where worker_id = 'w1'")
    peers = _service(db, "select public.heartbeat_worker('w3', p_live_seconds => 60)")
    assert [p["worker_id"] for p in peers] == ["w3"]  # w1 silent for an hour, w2 stopped


def test_prediction_stats_per_model(db: Database) -> None:
    for seconds in (2.0, 4.0, 6.0):
        job_id = db.enqueue(payload={"n": seconds})
        _service(db, "select public.claim_work(1, null, 'w1', 300)")
        _service(db, "select public.complete_and_claim(%s, 'w1', %s)", [job_id],
                 Jsonb({"provider_seconds": seconds}))
    stats = _service(db, "select public.prediction_stats(1)")
    flux = stats["black-forest-labs/flux-schnell"]
    assert flux["n"] == 3 and flux["p50"] == 4.0 and flux["max"] == 6.0
    assert flux["p05"] == pytest.approx(2.2) and flux["p95"] == pytest.approx(5.8)
