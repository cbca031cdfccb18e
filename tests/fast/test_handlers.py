"""Each handler on the in-memory ports: what it writes, what it enqueues, what it pays for."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

import pytest

from tests.fast.conftest import World
from worker.adapters.memory_provider import HANG, Script, image
from worker.context import JobContext
from worker.errors import (
    DeadlineExceeded,
    FetchRefused,
    InvalidInput,
    JobCancelled,
    MissingGeneration,
    PredictionFailed,
    RetryableError,
)
from worker.handlers import cleanup_storage, download_image, generate_image, process_webhook
from worker.jobs import DOWNLOAD_IMAGE, PROCESS_WEBHOOK
from worker.statuses import GenerationStatus, JobStatus, PredictionStatus
from worker.webhooks import sign

SECRET = "whsec_" + base64.b64encode(b"memory-webhook-secret").decode()
FLUX_DEV = "black-forest-labs/flux-dev"


def download_jobs(world: World) -> list[dict[str, object]]:
    return [r for r in world.db.queue.rows() if r["job_type"] == DOWNLOAD_IMAGE]


# -- generate-image ------
def test_generate_image_runs_the_model_and_hands_over_to_download(world: World) -> None:
    gid, job_id = world.submit()
    result = generate_image.handle(world.context(world.claim()))
    [call] = world.model.created
    assert call.model_id == "black-forest-labs/flux-schnell" and call.wait and call.webhook is None
    assert call.input["prompt"] == "a lighthouse" and call.cancel_after is not None
    pid = result["prediction_id"]
    gen = world.generation(gid)
    assert gen["status"] == GenerationStatus.DOWNLOADING
    assert gen["replicate_prediction_id"] == pid and gen["job_id"] == job_id
    assert gen["generation_time_seconds"] == 1.25
    [download] = download_jobs(world)
    assert download["priority"] == 1 and download["dedupe_key"] == f"download:{gid}"
    payload = download["payload"]
    assert payload["output_url"] == f"https://replicate.delivery/memory/{pid}.webp"
    assert payload["format"] == "webp" and payload["prediction_id"] == pid
    assert result["download_job_id"] == download["id"]


def test_a_retry_reuses_the_running_prediction_instead_of_paying_again(
    world_factory: Callable[..., World],
) -> None:
    steps = (PredictionStatus.PROCESSING, PredictionStatus.SUCCEEDED)
    world = world_factory(Script(steps=steps))
    gid, _ = world.submit()
    running = world.model.create_prediction("black-forest-labs/flux-schnell", None, {})
    world.db.generations.update(gid, {"replicate_prediction_id": running.id})
    result = generate_image.handle(world.context(world.claim()))
    assert result["prediction_id"] == running.id
    assert len(world.model.created) == 1  # only the one made above


def test_a_retry_after_a_failed_prediction_starts_a_new_one(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(Script(steps=(PredictionStatus.FAILED,)))
    gid, _ = world.submit()
    failed = world.model.create_prediction("black-forest-labs/flux-schnell", None, {})
    world.db.generations.update(gid, {"replicate_prediction_id": failed.id})
    world.model.script = Script()
    world.model.scripts.clear()
    result = generate_image.handle(world.context(world.claim()))
    assert result["prediction_id"] != failed.id and len(world.model.created) == 2
    assert world.generation(gid)["replicate_prediction_id"] == result["prediction_id"]


def test_a_finished_generation_is_not_generated_again(world: World) -> None:
    gid, _ = world.submit()
    world.db.generations.update(gid, {"status": GenerationStatus.CANCELLED})
    result = generate_image.handle(world.context(world.claim()))
    assert result == {"skipped": "generation cancelled"} and world.model.created == []


def test_a_missing_generation_fails_for_good(world: World) -> None:
    gid, _ = world.submit()
    del world.db.generations.rows[gid]
    with pytest.raises(MissingGeneration):
        generate_image.handle(world.context(world.claim()))
    assert world.model.created == []


def test_a_failed_model_raises_with_its_error(world_factory: Callable[..., World]) -> None:
    world = world_factory(Script(steps=(PredictionStatus.FAILED,), error="NSFW content"))
    world.submit()
    with pytest.raises(PredictionFailed, match="NSFW content"):
        generate_image.handle(world.context(world.claim()))


def test_webhook_mode_frees_the_thread_and_leaves_the_prediction_running(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(
        HANG, WORKER_WEBHOOK_URL="https://hooks.test/replicate-webhook", REPLICATE_WEBHOOK_SECRET=SECRET
    )
    gid, _ = world.submit()
    result = generate_image.handle(world.context(world.claim()))
    assert result["mode"] == "webhook"
    [call] = world.model.created
    assert call.webhook == "https://hooks.test/replicate-webhook" and not call.wait
    assert call.cancel_after == world.settings.job_timeout
    gen = world.generation(gid)
    assert gen["status"] == GenerationStatus.PROCESSING
    assert gen["replicate_prediction_id"] == result["prediction_id"]
    assert download_jobs(world) == []


def test_img2img_fetches_the_source_safely_and_sends_it_inline(world: World) -> None:
    source = "https://project.supabase.co/storage/v1/object/public/in/cat.png"
    world.sources.responses[source] = image("png")
    world.submit(FLUX_DEV, source_image_url=source, strength=0.4)
    generate_image.handle(world.context(world.claim()))
    assert world.sources.fetched == [source] and world.outputs.fetched == []
    [call] = world.model.created
    sent = str(call.input["image"])
    assert sent.startswith("data:image/png;base64,")
    assert base64.b64decode(sent.split(",", 1)[1]) == image("png").data
    assert call.input["prompt_strength"] == pytest.approx(0.6)


def test_a_refused_source_stops_before_any_prediction(world: World) -> None:
    source = "https://evil.test/cat.png"
    world.sources.responses[source] = FetchRefused("host evil.test is not on the allowed list")
    world.submit(FLUX_DEV, source_image_url=source, strength=0.4)
    with pytest.raises(FetchRefused):
        generate_image.handle(world.context(world.claim()))
    assert world.model.created == []


def _stop_while_waiting(world: World, stop: Callable[[JobContext], None]) -> tuple[str, str]:
    """Run generate-image in a thread, ``stop`` its context once the prediction exists;
    the handler must raise JobCancelled. Returns (generation id, prediction id)."""
    gid, _ = world.submit()
    ctx = world.context(world.claim())
    raised: list[BaseException] = []

    def run() -> None:
        try:
            generate_image.handle(ctx)
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while not world.model.runs:
        assert time.monotonic() < deadline, "no prediction was created"
        time.sleep(0.005)
    stop(ctx)
    thread.join(5)
    assert [type(e) for e in raised] == [JobCancelled]
    return gid, next(iter(world.model.runs))


def test_a_user_cancel_while_waiting_cancels_the_prediction(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(HANG)
    gid, pid = _stop_while_waiting(world, JobContext.cancel)
    assert world.model.cancelled == [pid]
    assert world.generation(gid)["replicate_prediction_id"] is None  # a retry starts afresh


def test_a_shutdown_leaves_the_prediction_for_the_next_attempt(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(HANG)
    gid, pid = _stop_while_waiting(world, JobContext.abandon)
    assert world.model.cancelled == []
    assert world.generation(gid)["replicate_prediction_id"] == pid


def test_the_job_deadline_cancels_the_prediction(world_factory: Callable[..., World]) -> None:
    world = world_factory(HANG, WORKER_JOB_TIMEOUT="0.2")
    world.submit()
    with pytest.raises(DeadlineExceeded):
        generate_image.handle(world.context(world.claim()))
    [pid] = list(world.model.runs)
    assert world.model.cancelled == [pid]


# -- download-image ------
def _downloading(world: World) -> tuple[str, str]:
    gid, job_id = world.submit()
    generate_image.handle(world.context(world.claim()))  # finish_prediction completes it
    assert world.job(job_id)["status"] == JobStatus.COMPLETED
    return gid, str(download_jobs(world)[0]["id"])


def test_download_image_stores_records_and_completes(world: World) -> None:
    gid, _ = _downloading(world)
    world.outputs.default = image("webp", 832, 1216)
    result = download_image.handle(world.context(world.claim([DOWNLOAD_IMAGE])))
    gen = world.generation(gid)
    path = f"{gen['user_id']}/{gid}.webp"
    assert result["storage_path"] == path
    assert world.db.store.objects[path] == (image("webp", 832, 1216).data, "image/webp")
    img = world.db.generations.find_image(gid)
    assert img is not None and img["public_url"] == world.db.store.public_url(path)
    assert (img["width"], img["height"], img["format"]) == (832, 1216, "webp")
    assert gen["status"] == GenerationStatus.COMPLETED and gen["error_message"] is None


def test_a_retry_reuses_the_stored_image_without_fetching(world: World) -> None:
    gid, download_id = _downloading(world)
    stored = world.db.generations.insert_image(  # stored by an earlier attempt
        {"generation_id": gid, "user_id": world.generation(gid)["user_id"],
         "storage_path": f"u/{gid}.webp", "format": "webp"}
    )
    q = world.db.queue
    world.claim([DOWNLOAD_IMAGE])
    q.expire_lease(download_id)  # ... whose worker died before completing the job
    q.requeue_stale()
    retry = world.claim([DOWNLOAD_IMAGE])
    assert retry.attempt_number == 2
    again = download_image.handle(world.context(retry))
    assert again == {"image_id": stored["id"], "reused": True}
    assert world.outputs.fetched == []
    assert world.generation(gid)["status"] == GenerationStatus.COMPLETED


def test_a_repeated_store_whose_answer_was_lost_answers_the_same_image(world: World) -> None:
    gid, download_id = _downloading(world)
    job = world.claim([DOWNLOAD_IMAGE])
    first = download_image.handle(world.context(job))
    assert world.job(download_id)["status"] == JobStatus.COMPLETED  # store_image did it
    again = download_image.handle(world.context(job))  # the same call, its answer lost
    assert again["image_id"] == first["image_id"]
    assert len(world.db.generations.images) == 1
    assert world.generation(gid)["status"] == GenerationStatus.COMPLETED


def test_a_cancelled_generation_downloads_nothing(world: World) -> None:
    gid, _ = _downloading(world)
    world.db.generations.update(gid, {"status": GenerationStatus.CANCELLED})
    result = download_image.handle(world.context(world.claim([DOWNLOAD_IMAGE])))
    assert result == {"skipped": "generation cancelled"} and world.outputs.fetched == []


def test_an_output_that_is_not_the_expected_image_is_refused(world: World) -> None:
    _gid, _ = _downloading(world)
    world.outputs.default = image("png")  # the job expects webp
    with pytest.raises(FetchRefused):
        download_image.handle(world.context(world.claim([DOWNLOAD_IMAGE])))
    assert world.db.store.objects == {}


# -- process-webhook ------
def _webhook_world(world_factory: Callable[..., World]) -> tuple[World, str, str]:
    world = world_factory(
        HANG, WORKER_WEBHOOK_URL="https://hooks.test/replicate-webhook", REPLICATE_WEBHOOK_SECRET=SECRET
    )
    gid, job_id = world.submit()
    generate_image.handle(world.context(world.claim()))
    world.db.queue.complete(job_id, "fast-worker", {})
    return world, gid, str(world.generation(gid)["replicate_prediction_id"])


def _delivery(world: World, prediction: dict[str, object], secret: str = SECRET) -> str:
    body = json.dumps(prediction)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": sign(secret, "msg_1", int(time.time()), body.encode()),
    }
    payload = {"prediction_id": prediction["id"], "body": body, "webhook": headers}
    return world.db.queue.enqueue(PROCESS_WEBHOOK, payload, dedupe_key=f"webhook:{prediction['id']}")


def test_a_signed_delivery_advances_the_generation(world_factory: Callable[..., World]) -> None:
    world, gid, pid = _webhook_world(world_factory)
    output = f"https://replicate.delivery/x/{pid}.webp"
    _delivery(world, {"id": pid, "status": "succeeded", "output": [output], "model": FLUX_DEV})
    result = process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))
    assert result["source"] == "delivery" and result["generation_id"] == gid
    assert world.generation(gid)["status"] == GenerationStatus.DOWNLOADING
    [download] = download_jobs(world)
    assert download["payload"]["output_url"] == output  # type: ignore[index]


def test_an_unverified_delivery_is_not_trusted_the_prediction_is_fetched(
    world_factory: Callable[..., World],
) -> None:
    world, gid, pid = _webhook_world(world_factory)
    forged = "whsec_" + base64.b64encode(b"someone else").decode()
    _delivery(world, {"id": pid, "status": "succeeded", "output": "https://evil.test/x.webp"}, forged)
    result = process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))
    assert result["source"] == "fetch"  # Replicate says it is still running
    assert result["skipped"] == f"prediction still {PredictionStatus.PROCESSING}"
    assert world.generation(gid)["status"] == GenerationStatus.PROCESSING
    assert download_jobs(world) == []


def test_a_failed_prediction_fails_the_generation_and_completes_the_job(
    world_factory: Callable[..., World],
) -> None:
    world, gid, pid = _webhook_world(world_factory)
    _delivery(world, {"id": pid, "status": "failed", "error": "CUDA out of memory"})
    result = process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))
    assert result["generation_status"] == GenerationStatus.FAILED
    gen = world.generation(gid)
    assert gen["status"] == GenerationStatus.FAILED
    assert gen["error_message"] == "the model failed: CUDA out of memory"


def test_a_late_delivery_changes_nothing(world_factory: Callable[..., World]) -> None:
    world, gid, pid = _webhook_world(world_factory)
    world.db.generations.update(gid, {"status": GenerationStatus.COMPLETED})
    _delivery(world, {"id": pid, "status": "failed", "error": "late"})
    result = process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))
    assert result["skipped"] == "generation already completed"
    assert world.generation(gid)["status"] == GenerationStatus.COMPLETED


def test_a_prediction_replicate_no_longer_knows_fails_the_generation(
    world_factory: Callable[..., World],
) -> None:
    world, gid, pid = _webhook_world(world_factory)
    world.model.runs.clear()  # Replicate answers 404
    world.db.queue.enqueue(PROCESS_WEBHOOK, {"prediction_id": pid, "fetch": True})
    process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))
    gen = world.generation(gid)
    assert gen["status"] == GenerationStatus.FAILED and "cannot be read" in gen["error_message"]


def test_a_cancel_job_cancels_the_prediction_at_the_provider(
    world_factory: Callable[..., World],
) -> None:
    world, gid, pid = _webhook_world(world_factory)
    world.db.queue.cancel_generation(gid)  # no job holds it: a cancel job is enqueued
    job = world.claim([PROCESS_WEBHOOK])
    assert job.payload["cancel"] is True
    result = process_webhook.handle(world.context(job))
    assert result == {"prediction_id": pid, "cancel": PredictionStatus.CANCELED}
    assert world.model.cancelled == [pid]
    world.db.queue.enqueue(PROCESS_WEBHOOK, {"prediction_id": "gone", "cancel": True})
    skipped = process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))
    assert skipped["cancel"] == "skipped"


def test_a_delivery_that_beats_the_prediction_id_is_retried(
    world_factory: Callable[..., World],
) -> None:
    world, _gid, _pid = _webhook_world(world_factory)
    _delivery(world, {"id": "pred-unknown", "status": "succeeded", "output": "https://x/y.webp"})
    with pytest.raises(RetryableError):
        process_webhook.handle(world.context(world.claim([PROCESS_WEBHOOK])))


# -- cleanup-storage ------
def test_cleanup_removes_objects_of_failed_and_deleted_generations(world: World) -> None:
    store = world.db.store
    kept, _ = world.submit()
    failed, _ = world.submit()
    world.db.generations.update(failed, {"status": GenerationStatus.FAILED})
    deleted = "0f0f0f0f-0000-4000-8000-000000000000"
    for gid in (kept, failed, deleted):
        store.upload(f"user/{gid}.webp", b"x", "image/webp")
    store.upload("user/notes.txt", b"x", "text/plain")  # not a generation's object
    world.db.queue.enqueue("cleanup-storage", {"limit": 100})
    result = cleanup_storage.handle(world.context(world.claim(["cleanup-storage"])))
    assert result == {"scanned": 4, "removed": 2}
    assert sorted(store.objects) == sorted([f"user/{kept}.webp", "user/notes.txt"])


def test_a_missing_payload_key_is_invalid_input(world: World) -> None:
    world.db.queue.enqueue(DOWNLOAD_IMAGE, {"generation_id": "g"})
    with pytest.raises(InvalidInput, match="output_url"):
        download_image.handle(world.context(world.claim([DOWNLOAD_IMAGE])))


# -- the catalogue decides what runs (before anything is paid) ------
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def catalogue_world() -> World:
    from tests.fast.conftest import settings
    from worker.adapters.memory import MemoryDatabase

    flux = "black-forest-labs/flux-schnell"
    return World(settings(), db=MemoryDatabase(catalogue={flux: None, SDXL: SDXL_VERSION}))


def test_a_model_taken_out_of_the_catalogue_is_refused_before_any_prediction() -> None:
    world = catalogue_world()
    world.submit()  # enqueued while the model was active
    assert world.db.generations.catalogue is not None
    del world.db.generations.catalogue["black-forest-labs/flux-schnell"]  # deactivated since
    with pytest.raises(InvalidInput) as refused:
        generate_image.handle(world.context(world.claim()))
    assert "Unknown model: black-forest-labs/flux-schnell" in refused.value.message
    assert world.model.created == []


def test_a_version_the_catalogue_no_longer_has_is_refused() -> None:
    world = catalogue_world()
    world.submit(SDXL, model_version=SDXL_VERSION)
    assert world.db.generations.catalogue is not None
    world.db.generations.catalogue[SDXL] = "e" * 64  # the catalogue moved to a new version
    with pytest.raises(InvalidInput) as refused:
        generate_image.handle(world.context(world.claim()))
    assert "model_version" in refused.value.message
    assert world.model.created == []


def test_the_catalogues_version_is_used_when_the_payload_has_none() -> None:
    world = catalogue_world()
    gid, _ = world.submit(SDXL)
    [job] = [r for r in world.db.queue.rows() if r["payload"]["generation_id"] == gid]
    assert job["payload"]["model_version"] == SDXL_VERSION  # filled at enqueue, as in SQL
    generate_image.handle(world.context(world.claim()))
    [call] = world.model.created
    assert call.version == SDXL_VERSION
