"""generate-image: run the model on Replicate, then hand the output to download-image.

Idempotent across retries: the prediction id is stored on the generation as soon as it
exists, and a retry fetches that prediction instead of paying for a second one (the
lifecycle itself is ``worker.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker import lifecycle
from worker.context import JobContext, required
from worker.errors import MissingGeneration
from worker.replicate.inputs import GenerationRequest, reported_size
from worker.statuses import GENERATION_TERMINAL, GenerationStatus


def handle(ctx: JobContext) -> Mapping[str, Any]:
    payload = ctx.job.payload
    gid = required(payload, "generation_id")
    gens = ctx.services.generations
    gen = gens.get(gid)
    if gen is None:
        raise MissingGeneration(f"generation {gid} does not exist")
    if gen["status"] in GENERATION_TERMINAL:
        ctx.log("job.skipped", "generation is already %s", gen["status"])
        return {"skipped": f"generation {gen['status']}"}

    request = GenerationRequest.from_payload(payload)
    gens.update(
        gid,
        {"status": GenerationStatus.PROCESSING, "job_id": ctx.job.id},
        unless_status=GENERATION_TERMINAL,
    )
    prediction = lifecycle.start_or_reuse(ctx, gid, gen, request)
    if ctx.services.settings.webhook_url and not prediction.terminal:
        # Webhook mode: free the thread now. The generation stays `processing` with its
        # prediction id; process-webhook (a delivery, or the safety net's fetch) advances it.
        ctx.log("prediction.webhook", "prediction %s will report by webhook", prediction.id)
        return {"prediction_id": prediction.id, "mode": "webhook"}

    def forget() -> None:  # cancelled at the provider: a retry must not reuse it
        gens.update(gid, {"replicate_prediction_id": None})

    prediction = lifecycle.wait(ctx, ctx.services.model, prediction, on_cancelled=forget)
    return lifecycle.advance(ctx, gid, gen, prediction, request.model_id, reported_size(request))
