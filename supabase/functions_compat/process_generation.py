"""POST /process-generation (service_role only): run one Replicate generation, synchronously.

Body: the ``generate-image`` job parameters (prompt, model_id, model_version, width, height,
num_inference_steps, guidance_scale, seed, negative_prompt, source_image_url, strength).

    200 {"success": true, "output_url", "format", "width", "height",
         "generation_time_seconds"}
    400 {"success": false, "error": "..."}      bad parameters, or the model failed

The model input is the worker's (``worker.replicate.inputs.build_input``) and the call is
the worker's ReplicateClient: create with ``Prefer: wait`` and a ``Cancel-After`` bound,
then poll; a prediction still running at FUNCTIONS_GENERATE_TIMEOUT is cancelled. An
img2img source is fetched with the worker's safe fetcher (allowed hosts, size cap).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions_compat.auth import TokenVerifier
from functions_compat.http import HttpError, json_response, read_json_object
from functions_compat.runtime import WorkerRuntime, WorkerRuntimes
from worker.errors import DeadlineExceeded, JobCancelled, PredictionFailed, WorkerError
from worker.handlers.generate_image import SOURCE_FORMATS
from worker.replicate.inputs import (
    GenerationRequest,
    build_input,
    output_format,
    reported_size,
    resolve_version,
    uses_img2img,
)


def generate_once(rt: WorkerRuntime, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Blocking: one prediction from create to output URL (raises WorkerError subclasses)."""
    from worker.net import to_data_uri

    started = time.monotonic()
    deadline = started + timeout
    request = GenerationRequest.from_payload(body)
    version = resolve_version(request)
    if uses_img2img(request) and request.source_image_url:
        fetched = rt.services.fetch_sources.fetch(request.source_image_url, expect=SOURCE_FORMATS)
        request = dataclasses.replace(request, source_image=to_data_uri(fetched))
    model = rt.services.model
    prediction = model.create_prediction(
        request.model_id,
        version,
        build_input(request),
        cancel_after=max(5, int(timeout)),
        wait=True,
    )
    try:
        prediction = model.wait_for(prediction, deadline)
    except (DeadlineExceeded, JobCancelled):
        model.cancel_prediction(prediction.id)
        raise
    urls = prediction.output_urls
    if not urls:
        raise PredictionFailed("the model finished without an output image")
    width, height = reported_size(request)
    seconds = prediction.predict_time
    return {
        "success": True,
        "output_url": urls[0],
        "format": output_format(request.model_id, urls[0]),
        "width": width,
        "height": height,
        "generation_time_seconds": round(
            seconds if seconds is not None else time.monotonic() - started, 3
        ),
    }


class ProcessGeneration:
    def __init__(self, verifier: TokenVerifier, runtimes: WorkerRuntimes, timeout: float) -> None:
        self.verifier = verifier
        self.runtimes = runtimes
        self.timeout = timeout

    async def __call__(self, request: Request) -> Response:
        await self.verifier.service(request)
        body = await read_json_object(request)
        rt = await self.runtimes.get("process-generation")
        try:
            result = await self.runtimes.run(lambda: generate_once(rt, body, self.timeout))
        except WorkerError as exc:
            raise HttpError(400, exc.message) from None
        return json_response(result)
