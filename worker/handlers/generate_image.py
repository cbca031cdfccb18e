"""generate-image: run the model on Replicate, then hand the output to download-image.

Idempotent across retries: the prediction id is stored on the generation as soon as it
exists, and a retry fetches that prediction instead of paying for a second one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from worker.errors import (
    DeadlineExceeded,
    JobCancelled,
    MissingGeneration,
    PredictionFailed,
    RetryableError,
    WorkerError,
)
from worker.handlers.base import TERMINAL_GENERATION, JobContext, required
from worker.jobs import DOWNLOAD_IMAGE
from worker.net import to_data_uri
from worker.replicate.inputs import (
    GenerationRequest,
    build_input,
    output_format,
    reported_size,
    uses_img2img,
)

SOURCE_FORMATS = {"png", "jpeg", "webp", "gif"}
REUSABLE = ("starting", "processing", "succeeded")


def handle(ctx: JobContext) -> Mapping[str, Any]:
    payload = ctx.job.payload
    gid = required(payload, "generation_id")
    gens = ctx.services.generations
    gen = gens.get(gid)
    if gen is None:
        raise MissingGeneration(f"generation {gid} does not exist")
    if gen["status"] in TERMINAL_GENERATION:
        ctx.log("job.skipped", "generation is already %s", gen["status"])
        return {"skipped": f"generation {gen['status']}"}

    request = GenerationRequest.from_payload(payload)
    gens.update(
        gid, {"status": "processing", "job_id": ctx.job.id}, unless_status=TERMINAL_GENERATION
    )
    prediction = _start_or_reuse(ctx, gid, gen, request)
    if ctx.services.settings.webhook_url and not prediction.terminal:
        # Webhook mode: free the thread now. The generation stays `processing` with its
        # prediction id; process-webhook (a delivery, or the safety net's fetch) advances it.
        ctx.log("prediction.webhook", "prediction %s will report by webhook", prediction.id)
        return {"prediction_id": prediction.id, "mode": "webhook"}
    prediction = _wait(ctx, gid, prediction)
    return advance_after_prediction(
        ctx, gid, gen, prediction, request.model_id, reported_size(request)
    )


def _start_or_reuse(
    ctx: JobContext, gid: str, gen: Mapping[str, Any], request: GenerationRequest
) -> Any:
    model = ctx.services.model
    known = gen.get("replicate_prediction_id")
    if known:
        prediction = model.get_prediction(str(known))
        if prediction.status in REUSABLE:
            ctx.log(
                "prediction.reused", "reusing prediction %s (%s)", prediction.id, prediction.status
            )
            return prediction
        ctx.log(
            "prediction.stale",
            "previous prediction %s ended %s; starting a new one",
            prediction.id,
            prediction.status,
        )
    ctx.check()
    source_url = ctx.job.payload.get("source_image_url")
    if source_url and request.strength is not None and uses_img2img(request):
        fetched = ctx.services.fetch_sources.fetch(str(source_url), expect=SOURCE_FORMATS)
        request = dataclasses.replace(request, source_image=to_data_uri(fetched))
    settings = ctx.services.settings
    webhook = settings.webhook_url
    # Polling: the prediction may not outlive this job. Webhook mode: the job ends at once,
    # and the prediction gets the same budget from now (Replicate then reports it canceled).
    budget = settings.job_timeout if webhook else ctx.remaining()
    prediction = model.create_prediction(
        request.model_id,
        request.model_version,
        build_input(request),
        webhook=webhook,
        webhook_events_filter=["completed"] if webhook else None,
        cancel_after=max(5, int(budget)),
        wait=not webhook,
    )
    # Persist at once: from here on a retry reuses this prediction instead of paying again.
    try:
        ctx.services.generations.update(gid, {"replicate_prediction_id": prediction.id})
    except RetryableError as exc:
        if webhook:
            raise  # deliveries are matched by this id: without it the result would be lost
        # The prediction runs (and bills) whether or not its id is written; failing the
        # attempt now would make the retry pay for a second one. Keep polling instead: the
        # id is written with the outcome (advance_after_prediction).
        ctx.log(
            "prediction.unrecorded",
            "prediction %s created but not recorded yet: %s",
            prediction.id,
            exc.message,
            level=logging.WARNING,
        )
        return prediction
    ctx.log("prediction.created", "prediction %s created (%s)", prediction.id, prediction.status)
    return prediction


def _wait(ctx: JobContext, gid: str, prediction: Any) -> Any:
    model = ctx.services.model
    try:
        return model.wait_for(prediction, ctx.deadline, should_stop=ctx.should_stop)
    except (JobCancelled, DeadlineExceeded):
        if ctx.cancel_requested or not ctx.abandoned:
            # Cancelled by the user, or past the job deadline: stop paying for it. On a
            # shutdown (abandoned) the prediction keeps running for the next attempt.
            try:
                model.cancel_prediction(prediction.id)
            except WorkerError as exc:  # never mask why we stopped
                ctx.log(
                    "prediction.cancel_failed",
                    "cancel of %s failed: %s",
                    prediction.id,
                    exc.message,
                    level=logging.WARNING,
                )
            else:
                ctx.services.generations.update(gid, {"replicate_prediction_id": None})
                ctx.log("prediction.cancelled", "prediction %s cancelled", prediction.id)
        if ctx.cancel_requested:
            raise JobCancelled("the generation was cancelled") from None
        ctx.check()
        raise


def advance_after_prediction(
    ctx: JobContext,
    gid: str,
    gen: Mapping[str, Any],
    prediction: Any,
    model_id: str,
    size: tuple[Any, Any],
) -> Mapping[str, Any]:
    """A finished prediction: enqueue the download and mark the generation downloading.

    Shared by polling (generate-image) and webhook deliveries (process-webhook)."""
    if prediction.status != "succeeded" and not prediction.output_urls:
        raise PredictionFailed(failure_message(prediction))
    ctx.check()  # cancelled meanwhile: no download for a generation the user gave up on
    urls = prediction.output_urls
    if not urls:
        raise PredictionFailed("the model finished without an output image")
    fmt = output_format(model_id, urls[0])
    width, height = size
    seconds = _predict_seconds(prediction)
    download_payload = {
        "generation_id": gid,
        "user_id": gen.get("user_id"),
        "output_url": urls[0],
        "format": fmt,
        "width": width,
        "height": height,
        "prompt": gen.get("prompt"),
        "negative_prompt": gen.get("negative_prompt"),
        "model_id": model_id,
        "model": gen.get("model"),
        "prediction_id": prediction.id,
    }
    queue = ctx.services.queue
    download_id = queue.enqueue(
        DOWNLOAD_IMAGE, download_payload, priority=1, dedupe_key=f"download:{gid}"
    )
    fields: dict[str, Any] = {"status": "downloading", "replicate_prediction_id": prediction.id}
    if seconds is not None:
        fields["generation_time_seconds"] = round(seconds, 3)
    ctx.services.generations.update(gid, fields, unless_status=TERMINAL_GENERATION)
    ctx.log(
        "prediction.succeeded",
        "prediction %s succeeded; download job %s",
        prediction.id,
        download_id,
    )
    return {
        "prediction_id": prediction.id,
        "download_job_id": download_id,
        "output_url": urls[0],
        "format": fmt,
    }


def failure_message(prediction: Any) -> str:
    """Why a finished prediction brought no image, for the generation's error_message."""
    error = prediction.error or ""
    if prediction.status in ("canceled", "aborted"):
        return f"the prediction was {prediction.status}" + (f": {error}" if error else "")
    return f"the model failed: {error}" if error else "the model failed without an error message"


def _predict_seconds(prediction: Any) -> float | None:
    metrics = prediction.raw.get("metrics") if isinstance(prediction.raw, Mapping) else None
    if isinstance(metrics, Mapping):
        for key in ("predict_time", "total_time"):
            value = metrics.get(key)
            if isinstance(value, int | float):
                return float(value)
    return None
