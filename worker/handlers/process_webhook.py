"""process-webhook: a finished prediction advances its generation (webhook mode).

Two sources, one outcome:

- a **delivery**: the replicate-webhook function verified the signature, recorded the
  delivery id and enqueued this job with the raw body (``body``) and its signature headers
  (``webhook``). The body is trusted only when its signature verifies again here with
  REPLICATE_WEBHOOK_SECRET (the job could have been written by anyone holding the service
  key); otherwise, and for bodies too large to store, the prediction is fetched instead.
- a **check** (``fetch: true``), enqueued by the safety net (``enqueue_webhook_checks``) for
  a generation `processing` too long without a delivery: the prediction is fetched
  (``GET /v1/predictions/{id}``).

Then, exactly as polling would: succeeded -> enqueue download-image and mark the generation
`downloading` (``worker.lifecycle.advance``); failed / canceled / aborted or no output ->
the generation `failed` with the reason (the job itself completes: a model failure is
not a reason to retry the delivery). A prediction still running is a no-op (a check
touches the generation, so the next check waits WORKER_WEBHOOK_CHECK_AFTER again).

Idempotent: the generation is found by its current prediction id, and one that already
moved on (downloading, completed, failed, cancelled) is left alone, so a repeated or late
delivery changes nothing; the download job is deduplicated by generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker import lifecycle
from worker.context import JobContext, required
from worker.errors import InvalidInput, RetryableError
from worker.ports import Prediction
from worker.statuses import GENERATION_ADVANCED, GenerationStatus
from worker.webhooks import WebhookSignatureError, verify_signature


def handle(ctx: JobContext) -> Mapping[str, Any]:
    payload = ctx.job.payload
    if payload.get("cancel"):
        return _cancel(ctx, required(payload, "prediction_id"))
    prediction = _delivered(ctx, payload)
    source = "delivery" if prediction is not None else "fetch"
    if prediction is None:
        pid = required(payload, "prediction_id")
        try:
            prediction = _fetch(ctx, pid)
        except InvalidInput as exc:  # 404: Replicate no longer knows the prediction
            return _gone(ctx, pid, exc.message)
    result = _advance(ctx, prediction, source)
    return {"prediction_id": prediction.id, "source": source, **result}


def _cancel(ctx: JobContext, prediction_id: str) -> Mapping[str, Any]:
    """The user cancelled a generation whose prediction runs with no job holding it
    (webhook mode; cancel_generation enqueued this): stop paying for it."""
    try:
        prediction = ctx.services.model.cancel_prediction(prediction_id)
    except InvalidInput as exc:  # 404/422: Replicate no longer knows it, nothing to stop
        return {"prediction_id": prediction_id, "cancel": "skipped", "reason": exc.message}
    ctx.log(
        "prediction.cancelled", "prediction %s cancelled (%s)", prediction_id, prediction.status
    )
    return {"prediction_id": prediction_id, "cancel": str(prediction.status)}


# -- where the prediction comes from ------
def _delivered(ctx: JobContext, payload: Mapping[str, Any]) -> Prediction | None:
    """The stored delivery's prediction when its signature verifies; None means fetch."""
    body = payload.get("body")
    if payload.get("fetch") or not isinstance(body, str):
        return None
    secret = ctx.services.settings.webhook_secret
    if secret is None:
        ctx.log("webhook.unverified", "no REPLICATE_WEBHOOK_SECRET: fetching the prediction")
        return None
    stored = payload.get("webhook")
    headers = {str(k): str(v) for k, v in stored.items()} if isinstance(stored, Mapping) else {}
    try:
        verify_signature(secret.get_secret_value(), headers, body.encode(), tolerance_s=None)
        raw = json.loads(body)
        prediction = Prediction.from_json(raw)
    except (WebhookSignatureError, ValueError, InvalidInput) as exc:
        ctx.log(
            "webhook.untrusted",
            "stored delivery not trusted (%s): fetching the prediction",
            exc,
            level=logging.WARNING,
        )
        return None
    expected = payload.get("prediction_id")
    if expected and expected != prediction.id:
        ctx.log(
            "webhook.untrusted",
            "delivery body is for %s, job for %s: fetching",
            prediction.id,
            expected,
            level=logging.WARNING,
        )
        return None
    return prediction


def _fetch(ctx: JobContext, prediction_id: str) -> Prediction:
    return ctx.services.model.get_prediction(prediction_id)


# -- what it does to the generation ------
def _advance(ctx: JobContext, prediction: Prediction, source: str) -> dict[str, Any]:
    gens = ctx.services.generations
    gen = gens.find_by_prediction(prediction.id)
    if gen is None:
        if source == "delivery" and not ctx.job.is_last_attempt:
            # The delivery can beat the generate-image job's write of the prediction id.
            raise RetryableError(f"no generation has prediction {prediction.id} (yet)")
        ctx.log("webhook.unmatched", "no generation for prediction %s", prediction.id)
        return {"skipped": "no generation for this prediction"}
    gid = str(gen["id"])
    status = str(gen["status"])
    if status in GENERATION_ADVANCED:
        ctx.log("webhook.duplicate", "generation %s already %s", gid, status)
        return {"generation_id": gid, "skipped": f"generation already {status}"}
    if not prediction.terminal:
        if source == "fetch":
            # Still running: touch the row (updated_at) so the next check waits again.
            touch = {"replicate_prediction_id": prediction.id}
            gens.update(gid, touch, unless_status=GENERATION_ADVANCED)
        ctx.log("webhook.running", "prediction %s is still %s", prediction.id, prediction.status)
        return {"generation_id": gid, "skipped": f"prediction still {prediction.status}"}
    if prediction.succeeded and prediction.output_urls:
        model_id = str(prediction.raw.get("model") or gen.get("model") or "")
        advanced = lifecycle.advance(
            ctx, gid, gen, prediction, model_id, (gen.get("width"), gen.get("height"))
        )
        return {"generation_id": gid, **advanced}
    message = lifecycle.failure_message(prediction)
    return _fail(ctx, gid, prediction.id, message, prediction.status)


def _gone(ctx: JobContext, prediction_id: str, reason: str) -> Mapping[str, Any]:
    gen = ctx.services.generations.find_by_prediction(prediction_id)
    if gen is None or gen["status"] in GENERATION_ADVANCED:
        return {"prediction_id": prediction_id, "skipped": "nothing to advance"}
    message = f"the prediction {prediction_id} cannot be read from Replicate ({reason})"
    return {
        "prediction_id": prediction_id,
        "source": "fetch",
        **_fail(ctx, str(gen["id"]), prediction_id, message, "unknown"),
    }


def _fail(
    ctx: JobContext, gid: str, prediction_id: str, message: str, prediction_status: str
) -> dict[str, Any]:
    fields = {
        "status": GenerationStatus.FAILED,
        "error_message": message,
        "completed_at": datetime.now(UTC).isoformat(),
    }
    row = ctx.services.generations.update(gid, fields, unless_status=GENERATION_ADVANCED)
    ctx.log(
        "prediction.failed",
        "prediction %s ended %s: generation %s %s",
        prediction_id,
        prediction_status,
        gid,
        GenerationStatus.FAILED if row is not None else "had already moved on",
        level=logging.WARNING,
    )
    return {
        "generation_id": gid,
        "prediction_status": prediction_status,
        "generation_status": GenerationStatus.FAILED if row is not None else "unchanged",
        "error": message,
    }
