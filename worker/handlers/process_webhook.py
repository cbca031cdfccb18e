"""process-webhook: a verified Replicate delivery advances its generation (webhook mode).

The replicate-webhook endpoint verified the signature and enqueued this job with the raw
delivery; it is verified again here when REPLICATE_WEBHOOK_SECRET is set (the job could have
been enqueued by anyone holding the service key). Idempotent: a repeated or late delivery
for a generation that already moved on changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from worker.errors import InvalidInput
from worker.handlers.base import JobContext
from worker.handlers.generate_image import advance_after_prediction
from worker.replicate.client import Prediction
from worker.webhooks import WebhookSignatureError, verify_signature

ALREADY_ADVANCED = ("downloading", "completed", "failed", "cancelled")


def handle(ctx: JobContext) -> Mapping[str, Any]:
    payload = ctx.job.payload
    body = payload.get("body")
    if not isinstance(body, str):
        raise InvalidInput("process-webhook job without the delivery body")
    secret = ctx.services.settings.webhook_secret
    if secret is not None:
        headers = {
            k: str(payload.get(k, ""))
            for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        try:
            verify_signature(secret.get_secret_value(), headers, body.encode(), tolerance_s=None)
        except WebhookSignatureError as exc:
            raise InvalidInput(f"webhook signature rejected: {exc}") from exc
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("webhook body is not JSON") from exc
    if not isinstance(raw, dict) or not raw.get("id"):
        raise InvalidInput("webhook body is not a prediction")
    prediction = Prediction.from_json(raw)
    gen = ctx.services.generations.find_by_prediction(prediction.id)
    if gen is None:
        ctx.log("webhook.unmatched", "no generation for prediction %s", prediction.id)
        return {"skipped": "no generation for this prediction"}
    gid = str(gen["id"])
    if gen["status"] in ALREADY_ADVANCED:
        ctx.log("webhook.duplicate", "generation %s already %s", gid, gen["status"])
        return {"skipped": f"generation already {gen['status']}"}
    if not prediction.terminal:
        return {"skipped": f"prediction still {prediction.status}"}
    model_id = str(raw.get("model") or gen.get("model") or "")
    return advance_after_prediction(
        ctx, gid, gen, prediction, model_id, (gen.get("width"), gen.get("height"))
    )
