"""The combined queue calls (20261205000100_fewer_round_trips.sql): claim_work,
complete_and_claim, finish_prediction, store_image, heartbeat_worker, prediction_stats, on
the in-memory double and on the real RPCs. Each does in one transaction what took several
calls, fenced (PW001 -> LeaseLost) like complete_job, and a repeated call whose answer was
lost answers again instead of being fenced out."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from tests.contract.conftest import FLUX, SDXL, Backend, gen
from worker.errors import GenerationClosed, LeaseLost
from worker.jobs import DOWNLOAD_IMAGE, GENERATE_IMAGE, PROCESS_WEBHOOK, parse_ts
from worker.ports import Chain, PredictionDone, WorkerInfo
from worker.statuses import GenerationStatus, JobStatus

TYPES = [GENERATE_IMAGE, DOWNLOAD_IMAGE]
LEASE = 60
CHAIN = Chain(1, tuple(TYPES), LEASE)


def _generation_job(backend: Backend, worker_id: str, **fields: Any) -> tuple[str, str]:
    """A queued generation and its generate-image job, claimed by ``worker_id``."""
    gid = backend.add_generation(status=GenerationStatus.QUEUED, **fields)
    user = (backend.generations.get(gid) or {})["user_id"]
    job_id = backend.queue.enqueue(GENERATE_IMAGE, gen(generation_id=gid, user_id=user))
    [job] = backend.queue.claim_work(1, TYPES, worker_id, LEASE).jobs
    assert job.id == job_id
    return gid, job_id


def _done(backend: Backend, gid: str, worker_id: str, pid: str = "pred-1") -> PredictionDone:
    user = (backend.generations.get(gid) or {})["user_id"]
    return PredictionDone(
        generation_id=gid,
        prediction_id=pid,
        generation_time=1.25,
        download={"generation_id": gid, "user_id": user, "output_url": "https://x/y.webp"},
        result={"prediction_id": pid, "worker_id": worker_id, "attempt": 1},
    )


def _image(backend: Backend, gid: str) -> dict[str, Any]:
    return {
        "generation_id": gid,
        "user_id": (backend.generations.get(gid) or {})["user_id"],
        "filename": f"{gid}.webp",
        "storage_path": f"u/{gid}.webp",
        "public_url": f"http://x/{gid}.webp",
        "file_size": 10,
        "width": 64,
        "height": 64,
        "format": "webp",
    }


# -- claim_work ------
def test_claim_work_starts_a_generate_job_and_hands_its_generation_over(
    backend: Backend, worker_id: str
) -> None:
    gid = backend.add_generation(status=GenerationStatus.QUEUED)
    job_id = backend.queue.enqueue(GENERATE_IMAGE, gen(generation_id=gid))
    answer = backend.queue.claim_work(3, TYPES, worker_id, LEASE)
    [job] = answer.jobs
    assert job.id == job_id and job.preloaded and job.generation is not None
    assert job.generation["status"] == GenerationStatus.PROCESSING
    assert job.generation["job_id"] == job_id
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.PROCESSING
    assert row["job_id"] == job_id
    assert backend.job(job_id)["locked_by"] == worker_id


def test_claim_work_leaves_a_finished_generation_alone(backend: Backend, worker_id: str) -> None:
    gid = backend.add_generation(status=GenerationStatus.QUEUED)
    backend.queue.enqueue(GENERATE_IMAGE, gen(generation_id=gid))
    backend.generations.update(gid, {"status": GenerationStatus.FAILED})
    [job] = backend.queue.claim_work(1, TYPES, worker_id, LEASE).jobs
    assert job.generation is not None and job.generation["status"] == GenerationStatus.FAILED
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.FAILED


def test_claim_work_hands_a_download_its_generation_and_a_deleted_one_as_none(
    backend: Backend, worker_id: str
) -> None:
    gid = backend.add_generation(status=GenerationStatus.DOWNLOADING)
    backend.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid}, priority=1)
    gone = str(uuid.uuid4())
    backend.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": gone})
    first, second = backend.queue.claim_work(5, TYPES, worker_id, LEASE).jobs
    assert first.generation is not None and first.generation["id"] == gid
    assert first.generation["status"] == GenerationStatus.DOWNLOADING  # not changed
    assert second.preloaded and second.generation is None


def test_claim_work_says_when_the_next_retry_is_due(backend: Backend, worker_id: str) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen(), max_attempts=3)
    q.claim_work(1, TYPES, worker_id, LEASE)
    row = q.fail(job_id, worker_id, "busy", None, True)
    due = parse_ts(row["scheduled_at"])
    answer = q.claim_work(2, TYPES, worker_id, LEASE)
    assert answer.jobs == () and answer.next_at is not None and due is not None
    assert abs((answer.next_at - due).total_seconds()) < 0.01
    other = q.enqueue(DOWNLOAD_IMAGE, {"n": 1})
    full = q.claim_work(1, TYPES, worker_id, LEASE)
    assert [j.id for j in full.jobs] == [other] and full.next_at is None  # found all it asked


def test_claim_work_for_an_idle_worker_takes_a_suspect_alone(
    backend: Backend, worker_id: str
) -> None:
    q = backend.queue
    suspect = q.enqueue(GENERATE_IMAGE, gen(n=1), priority=5)
    q.claim(1, TYPES, "dead-worker", LEASE)
    backend.expire_lease(suspect)
    q.requeue_stale()
    others = [q.enqueue(GENERATE_IMAGE, gen(n=n)) for n in (2, 3)]
    alone = q.claim_work(3, TYPES, worker_id, LEASE, suspect_alone=True)
    assert [j.id for j in alone.jobs] == [suspect] and alone.jobs[0].suspect
    backend.queue.release(suspect, worker_id)
    busy = q.claim_work(3, TYPES, worker_id, LEASE, exclude_suspects=True)
    assert sorted(j.id for j in busy.jobs) == sorted(others)


def test_claim_work_for_an_idle_worker_fills_its_threads_without_suspects(
    backend: Backend, worker_id: str
) -> None:
    q = backend.queue
    suspect = q.enqueue(GENERATE_IMAGE, gen(n=0), priority=-1)
    q.claim(1, TYPES, "dead-worker", LEASE)
    backend.expire_lease(suspect)
    q.requeue_stale()
    healthy = [q.enqueue(GENERATE_IMAGE, gen(n=n)) for n in (1, 2, 3)]  # ahead of it
    got = q.claim_work(4, TYPES, worker_id, LEASE, suspect_alone=True)
    assert [j.id for j in got.jobs] == healthy
    assert backend.job(suspect)["status"] == JobStatus.PENDING


# -- complete_and_claim ------
def test_complete_and_claim_completes_then_claims_for_the_thread(
    backend: Backend, worker_id: str
) -> None:
    q = backend.queue
    first = q.enqueue(GENERATE_IMAGE, gen(n=1))
    q.claim_work(1, TYPES, worker_id, LEASE)
    second = q.enqueue(GENERATE_IMAGE, gen(n=2))
    skipped = q.enqueue(PROCESS_WEBHOOK, {"prediction_id": "p"})  # not in the chain's types
    result = {"ok": True, "worker_id": worker_id, "attempt": 1}
    answer = q.complete_and_claim(first, worker_id, result, Chain(1, (GENERATE_IMAGE,), LEASE))
    assert [j.id for j in answer.jobs] == [second] and answer.asked == 1
    row = backend.job(first)
    assert row["status"] == JobStatus.COMPLETED and row["result"] == result
    assert backend.job(second)["locked_by"] == worker_id
    assert backend.job(skipped)["status"] == JobStatus.PENDING
    empty = q.complete_and_claim(second, worker_id, {"ok": 2}, CHAIN)
    assert empty.jobs == () and empty.asked == 1  # the queue had nothing more


def test_complete_and_claim_is_fenced_and_answers_a_repeat(
    backend: Backend, worker_id: str
) -> None:
    q = backend.queue
    job_id = q.enqueue(GENERATE_IMAGE, gen())
    q.claim_work(1, TYPES, worker_id, LEASE)
    result = {"ok": True, "worker_id": worker_id, "attempt": 1}
    with pytest.raises(LeaseLost):
        q.complete_and_claim(job_id, "someone-else", result, None)
    q.complete_and_claim(job_id, worker_id, result, None)
    again = q.complete_and_claim(job_id, worker_id, result, None)  # its answer was lost
    assert again.jobs == ()
    with pytest.raises(LeaseLost):  # another outcome for a finished job is refused
        q.complete_and_claim(job_id, worker_id, {**result, "attempt": 2}, None)


# -- finish_prediction ------
def test_finish_prediction_hands_the_download_to_the_thread(
    backend: Backend, worker_id: str
) -> None:
    gid, job_id = _generation_job(backend, worker_id)
    answer = backend.queue.finish_prediction(job_id, worker_id, _done(backend, gid, worker_id),
                                             CHAIN)
    [download] = answer.jobs
    assert answer.download_job_id == download.id
    assert answer.generation_status == GenerationStatus.DOWNLOADING
    assert download.job_type == DOWNLOAD_IMAGE and download.attempt_number == 1
    assert download.generation is not None
    assert download.generation["status"] == GenerationStatus.DOWNLOADING
    row = backend.job(download.id)
    assert row["status"] == JobStatus.PROCESSING and row["locked_by"] == worker_id
    assert row["priority"] == 1 and row["dedupe_key"] == f"download:{gid}"
    assert row["created_by"] == (backend.generations.get(gid) or {})["user_id"]
    generation = backend.generations.get(gid)
    assert generation is not None and generation["status"] == GenerationStatus.DOWNLOADING
    assert generation["replicate_prediction_id"] == "pred-1"
    assert float(generation["generation_time_seconds"]) == 1.25
    done = backend.job(job_id)
    assert done["status"] == JobStatus.COMPLETED and done["locked_by"] is None
    assert done["result"]["download_job_id"] == download.id


def test_finish_prediction_without_a_chain_leaves_the_download_pending(
    backend: Backend, worker_id: str
) -> None:
    gid, job_id = _generation_job(backend, worker_id)
    answer = backend.queue.finish_prediction(job_id, worker_id, _done(backend, gid, worker_id),
                                             None)
    assert answer.jobs == () and answer.download_job_id is not None
    row = backend.job(answer.download_job_id)
    assert row["status"] == JobStatus.PENDING and row["locked_by"] is None


def test_finish_prediction_keeps_one_live_download_per_generation(
    backend: Backend, worker_id: str
) -> None:
    gid, job_id = _generation_job(backend, worker_id)
    live = backend.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid}, priority=1,
                                 dedupe_key=f"download:{gid}")
    answer = backend.queue.finish_prediction(job_id, worker_id, _done(backend, gid, worker_id),
                                             CHAIN)
    assert answer.download_job_id == live and answer.jobs == ()  # not taken from its queue
    assert backend.job(live)["status"] == JobStatus.PENDING


def test_finish_prediction_enqueues_nothing_for_a_finished_generation(
    backend: Backend, worker_id: str
) -> None:
    gid, job_id = _generation_job(backend, worker_id)
    backend.generations.update(gid, {"status": GenerationStatus.COMPLETED})
    answer = backend.queue.finish_prediction(job_id, worker_id, _done(backend, gid, worker_id),
                                             CHAIN)
    assert answer.download_job_id is None and answer.jobs == ()
    assert answer.generation_status == GenerationStatus.COMPLETED
    done = backend.job(job_id)
    assert done["status"] == JobStatus.COMPLETED
    assert done["result"]["skipped"] == "generation completed"


def test_finish_prediction_is_fenced_and_a_cancel_wins(backend: Backend, worker_id: str) -> None:
    gid, job_id = _generation_job(backend, worker_id)
    with pytest.raises(LeaseLost):
        backend.queue.finish_prediction(job_id, "someone-else",
                                        _done(backend, gid, "someone-else"), CHAIN)
    backend.cancel_generation(gid)  # cancels the running job too
    with pytest.raises(LeaseLost):
        backend.queue.finish_prediction(job_id, worker_id, _done(backend, gid, worker_id),
                                        CHAIN)
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.CANCELLED
    assert backend.job(job_id)["status"] == JobStatus.CANCELLED


def test_a_repeated_finish_prediction_hands_the_same_download_again(
    backend: Backend, worker_id: str
) -> None:
    gid, job_id = _generation_job(backend, worker_id)
    done = _done(backend, gid, worker_id)
    first = backend.queue.finish_prediction(job_id, worker_id, done, CHAIN)
    again = backend.queue.finish_prediction(job_id, worker_id, done, CHAIN)  # answer lost
    assert again.download_job_id == first.download_job_id
    assert [j.id for j in again.jobs] == [j.id for j in first.jobs]


# -- store_image ------
def test_store_image_records_completes_and_claims_the_next(
    backend: Backend, worker_id: str
) -> None:
    gid = backend.add_generation(status=GenerationStatus.DOWNLOADING)
    download = backend.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid}, priority=1)
    backend.queue.claim_work(1, TYPES, worker_id, LEASE)
    waiting = backend.queue.enqueue(GENERATE_IMAGE, gen(n=1))
    result = {"storage_path": f"u/{gid}.webp", "worker_id": worker_id, "attempt": 1}
    answer = backend.queue.store_image(download, worker_id, _image(backend, gid), result, CHAIN)
    assert not answer.reused and answer.image["generation_id"] == gid
    assert [j.id for j in answer.jobs] == [waiting]
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.COMPLETED
    assert row["completed_at"] is not None
    found = backend.generations.find_image(gid)
    assert found is not None and found["id"] == answer.image["id"]
    done = backend.job(download)
    assert done["status"] == JobStatus.COMPLETED
    assert done["result"]["image_id"] == answer.image["id"]
    again = backend.queue.store_image(download, worker_id, _image(backend, gid), result, CHAIN)
    assert again.image["id"] == answer.image["id"] and again.jobs == ()  # a repeat


def test_store_image_reuses_an_image_stored_before(backend: Backend, worker_id: str) -> None:
    gid = backend.add_generation(status=GenerationStatus.DOWNLOADING)
    earlier = backend.generations.insert_image(_image(backend, gid))
    download = backend.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid})
    backend.queue.claim_work(1, TYPES, worker_id, LEASE)
    answer = backend.queue.store_image(download, worker_id, {**_image(backend, gid),
                                                             "filename": "other.webp"},
                                       {"worker_id": worker_id}, None)
    assert answer.reused and answer.image["id"] == earlier["id"]
    row = backend.generations.get(gid)
    assert row is not None and row["status"] == GenerationStatus.COMPLETED


def test_store_image_refuses_a_cancelled_generation_and_writes_nothing(
    backend: Backend, worker_id: str
) -> None:
    gid = backend.add_generation(status=GenerationStatus.DOWNLOADING)
    download = backend.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": gid})
    backend.queue.claim_work(1, TYPES, worker_id, LEASE)
    with pytest.raises(LeaseLost):  # not theirs: nothing written either
        backend.queue.store_image(download, "someone-else", _image(backend, gid), {}, None)
    assert backend.generations.find_image(gid) is None
    backend.generations.update(gid, {"status": GenerationStatus.FAILED})
    with pytest.raises(GenerationClosed):
        backend.queue.store_image(download, worker_id, _image(backend, gid),
                                  {"worker_id": worker_id}, None)
    assert backend.generations.find_image(gid) is None
    assert backend.job(download)["status"] == JobStatus.PROCESSING  # nothing written


# -- the registry ------
def test_heartbeat_worker_answers_the_live_workers(backend: Backend, worker_id: str) -> None:
    q = backend.queue

    def info(wid: str, **kw: Any) -> WorkerInfo:
        return WorkerInfo(wid, socket.gethostname(), "test", "polling", 3, **kw)

    gone = f"{worker_id}-gone"
    q.heartbeat_worker(info(gone), 60)
    q.heartbeat_worker(info(gone, stopped=True), 60)
    other = f"{worker_id}-other"
    q.heartbeat_worker(info(other, job_types=(DOWNLOAD_IMAGE,), realtime_connected=True), 60)
    peers = {p.worker_id: p for p in q.heartbeat_worker(info(worker_id), 60)}
    assert worker_id in peers and other in peers and gone not in peers
    assert peers[other].job_types == (DOWNLOAD_IMAGE,) and peers[other].realtime_connected
    assert peers[other].takes(DOWNLOAD_IMAGE) and not peers[other].takes(GENERATE_IMAGE)
    assert peers[worker_id].job_types is None and peers[worker_id].concurrency == 3


# -- prediction_stats ------
def test_prediction_stats_reads_recent_durations_per_model(
    backend: Backend, worker_id: str
) -> None:
    q = backend.queue
    for seconds in (1.0, 2.0, 3.0, 4.0, 5.0):
        job_id = q.enqueue(GENERATE_IMAGE, gen(model_id=SDXL))
        q.claim_work(1, TYPES, worker_id, LEASE)
        q.complete_and_claim(job_id, worker_id, {"provider_seconds": seconds}, None)
    flux = q.enqueue(GENERATE_IMAGE, gen())
    q.claim_work(1, TYPES, worker_id, LEASE)
    q.complete_and_claim(flux, worker_id, {"no_duration": True}, None)
    stats = q.prediction_stats(1)
    assert FLUX not in stats
    sdxl = stats[SDXL]
    assert sdxl.n == 5 and sdxl.p50 == pytest.approx(3.0) and sdxl.max == pytest.approx(5.0)
    assert sdxl.p05 == pytest.approx(1.2) and sdxl.p95 == pytest.approx(4.8)
