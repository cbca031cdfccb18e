"""The prediction lifecycle, in one place: create (or reuse), wait, cancel on stop or
deadline, read the outcome, advance the generation.

Used by the generate-image handler (polling and webhook mode), the process-webhook handler
(a delivery, or the safety net's fetch) and the functions' process-generation (one
synchronous prediction with no job and no generation row).

Money rules, which is why this is written once:

- Replicate has no idempotency key: a prediction's id is stored on the generation as soon
  as it exists, and a retry reuses a prediction that is still running or succeeded
  instead of paying for a second one (``start_or_reuse``).
- A prediction never outlives the reason it was started: ``Cancel-After`` bounds it at the
  provider, and a wait stopped by the user's cancel or by the deadline cancels it
  (``wait``). A shutdown does not: the next attempt reuses it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from worker.context import JobContext
from worker.errors import (
    DeadlineExceeded,
    JobCancelled,
    PredictionFailed,
    RetryableError,
    WorkerError,
)
from worker.ports import Catalogue, Fetcher, ImageModel, Prediction, PredictionDone
from worker.replicate.inputs import (
    GenerationRequest,
    build_input,
    output_format,
    resolve_version,
    uses_img2img,
)
from worker.replicate.polling import Plan, provider_seconds
from worker.statuses import (
    PREDICTION_RUNNING,
    PREDICTION_STOPPED,
    PredictionStatus,
)

log = logging.getLogger("worker.lifecycle")

SOURCE_FORMATS = {"png", "jpeg", "webp", "gif"}  # img2img sources we accept
REUSABLE = PREDICTION_RUNNING | {PredictionStatus.SUCCEEDED}  # a retry picks these up
WEBHOOK_EVENTS = ("completed",)  # Replicate's webhook_events_filter: the final event only
MIN_CANCEL_AFTER = 5
NO_OUTPUT = "the model finished without an output image"
OUTPUT_REMOVED = "the prediction's output was removed before it was downloaded"


class Control(Protocol):
    """The stop conditions of whoever waits for a prediction (``JobContext``, ``Deadline``)."""

    deadline: float  # time.monotonic()

    @property
    def cancel_requested(self) -> bool: ...

    @property
    def abandoned(self) -> bool: ...

    def should_stop(self) -> bool: ...

    def check(self) -> None: ...

    def log(
        self, action: str, message: str, *args: Any, level: int = ..., **fields: Any
    ) -> None: ...


class Deadline:
    """The stop conditions of a call with no job (process-generation): a deadline only."""

    def __init__(self, seconds: float, what: str) -> None:
        self.deadline = time.monotonic() + seconds
        self._seconds = seconds
        self._what = what
        self.cancel_requested = False
        self.abandoned = False

    def should_stop(self) -> bool:
        return time.monotonic() >= self.deadline

    def check(self) -> None:
        if self.should_stop():
            raise DeadlineExceeded(f"the generation ran past {self._what} ({self._seconds:g}s)")

    def log(
        self, action: str, message: str, *args: Any, level: int = logging.INFO, **fields: Any
    ) -> None:
        log.log(level, message, *args, extra={"action": action, **fields})


# -- create ------
def create(
    model: ImageModel,
    fetch_sources: Fetcher,
    request: GenerationRequest,
    *,
    catalogue: Catalogue,
    cancel_after: float,
    webhook: str | None = None,
) -> Prediction:
    """Create the prediction for ``request``: the catalogue's word first (an active model,
    its own version: ``InvalidInput`` otherwise, before anything is paid), the version, the
    img2img source (fetched safely, sent as a data URI) and the model's input. With
    ``webhook`` it does not wait and Replicate reports the end to that URL;
    ``cancel_after`` bounds its life."""
    request = checked(catalogue, request)
    version = resolve_version(request)
    if uses_img2img(request) and request.source_image_url:
        fetched = fetch_sources.fetch(request.source_image_url, expect=SOURCE_FORMATS)
        request = dataclasses.replace(request, source_image=fetched.data_uri())
    return model.create_prediction(
        request.model_id,
        version,
        build_input(request),
        webhook=webhook,
        webhook_events_filter=WEBHOOK_EVENTS if webhook else None,
        cancel_after=max(MIN_CANCEL_AFTER, int(cancel_after)),
        wait=not webhook,
    )


def checked(catalogue: Catalogue, request: GenerationRequest) -> GenerationRequest:
    """``request`` as the catalogue allows it (``catalogue_model``, as service_role): the
    catalogue's version when the payload has none."""
    row = catalogue.catalogue_model(request.model_id, request.model_version)
    version = row.get("version")
    if not request.model_version and isinstance(version, str) and version:
        return dataclasses.replace(request, model_version=version)
    return request


def start_or_reuse(
    ctx: JobContext, gid: str, gen: Mapping[str, object], request: GenerationRequest
) -> Prediction:
    """The generation's prediction: its stored one when still usable, else a new one whose
    id is stored at once (from then on a retry reuses it instead of paying again)."""
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
    webhook = ctx.services.settings.webhook_url
    # Polling: the prediction may not outlive this job. Webhook mode: the job ends at once,
    # and the prediction gets the same budget from now (Replicate then reports it canceled).
    budget = ctx.services.settings.job_timeout if webhook else ctx.remaining()
    fetch = ctx.services.fetch_sources
    catalogue = ctx.services.generations
    prediction = create(
        model, fetch, request, catalogue=catalogue, cancel_after=budget, webhook=webhook
    )
    try:
        ctx.services.generations.update(gid, {"replicate_prediction_id": prediction.id})
    except RetryableError as exc:
        if webhook:
            raise  # deliveries are matched by this id: without it the result would be lost
        # The prediction runs (and bills) whether or not its id is written; failing the
        # attempt now would make the retry pay for a second one. Keep polling instead: the
        # id is written with the outcome (advance).
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


# -- wait and cancel ------
def wait(
    control: Control,
    model: ImageModel,
    prediction: Prediction,
    *,
    on_cancelled: Callable[[], None] = lambda: None,
    plan: Plan | None = None,
) -> Prediction:
    """Poll until the prediction settles (when ``plan`` says: ``worker.replicate.polling``).
    Stopped by the user's cancel or the deadline, it cancels the prediction (stop paying;
    ``on_cancelled`` runs when that worked) and raises why it stopped; stopped by a
    shutdown or a lost lease it leaves it running for the next attempt."""
    try:
        return model.wait_for(
            prediction,
            control.deadline,
            should_stop=control.should_stop,
            schedule=plan.delay if plan is not None else None,
        )
    except (JobCancelled, DeadlineExceeded):
        if (control.cancel_requested or not control.abandoned) and cancel(
            control, model, prediction.id
        ):
            on_cancelled()
        if control.cancel_requested:
            raise JobCancelled("the generation was cancelled") from None
        control.check()
        raise
    finally:
        if plan is not None:
            plan.close()


def cancel(control: Control, model: ImageModel, prediction_id: str) -> bool:
    """Cancel at the provider; a failure is logged, never raised (it must not mask why we
    stopped). True when the cancel was accepted."""
    try:
        model.cancel_prediction(prediction_id)
    except WorkerError as exc:
        control.log(
            "prediction.cancel_failed",
            "cancel of %s failed: %s",
            prediction_id,
            exc.message,
            level=logging.WARNING,
        )
        return False
    control.log("prediction.cancelled", "prediction %s cancelled", prediction_id)
    return True


# -- the outcome ------
def failure_message(prediction: Prediction) -> str:
    """Why a finished prediction brought no image, for the generation's error_message."""
    if prediction.succeeded:
        return OUTPUT_REMOVED if prediction.raw.get("data_removed") else NO_OUTPUT
    error = prediction.error or ""
    if prediction.status in PREDICTION_STOPPED:
        return f"the prediction was {prediction.status}" + (f": {error}" if error else "")
    return f"the model failed: {error}" if error else "the model failed without an error message"


def first_output(prediction: Prediction) -> str:
    """The output URL of a settled prediction; ``PredictionFailed`` when it has none."""
    urls = prediction.output_urls
    if not urls:
        raise PredictionFailed(failure_message(prediction))
    return urls[0]


def advance(
    ctx: JobContext,
    gid: str,
    gen: Mapping[str, object],
    prediction: Prediction,
    model_id: str,
    size: tuple[object, object],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A finished prediction, in one call (``finish_prediction``): the generation
    `downloading` with the prediction's id and run time, its download-image job enqueued
    (one per generation; claimed for this worker's thread when the daemon lets it chain),
    and the job completed (``ctx.completion``) with the result returned here (plus
    ``extra``)."""
    url = first_output(prediction)
    ctx.check()  # cancelled meanwhile: no download for a generation the user gave up on
    ctx.services.polling.learn(model_id, prediction)
    fmt = output_format(model_id, url)
    width, height = size
    download_payload = {
        "generation_id": gid,
        "user_id": gen.get("user_id"),
        "output_url": url,
        "format": fmt,
        "width": width,
        "height": height,
        "prompt": gen.get("prompt"),
        "negative_prompt": gen.get("negative_prompt"),
        "model_id": model_id,
        "model": gen.get("model"),
        "prediction_id": prediction.id,
    }
    result: dict[str, Any] = {
        **(extra or {}),
        "prediction_id": prediction.id,
        "output_url": url,
        "format": fmt,
    }
    took = provider_seconds(prediction)
    if took is not None:
        result["provider_seconds"] = round(took, 3)  # prediction_stats reads it
    seconds = prediction.predict_time
    done = PredictionDone(
        generation_id=gid,
        prediction_id=prediction.id,
        generation_time=round(seconds, 3) if seconds is not None else None,
        download=download_payload,
        result=ctx.stamped(result),
    )
    answer = ctx.services.queue.finish_prediction(ctx.job.id, ctx.worker_id, done, ctx.chain())
    ctx.completion = answer
    if answer.download_job_id is None:
        ctx.log(
            "prediction.succeeded",
            "prediction %s succeeded; generation %s meanwhile: no download",
            prediction.id,
            answer.generation_status,
        )
        return {**result, "skipped": f"generation {answer.generation_status}"}
    ctx.log(
        "prediction.succeeded",
        "prediction %s succeeded; download job %s%s",
        prediction.id,
        answer.download_job_id,
        " (run next by this worker)" if answer.jobs else "",
    )
    return {**result, "download_job_id": answer.download_job_id}
