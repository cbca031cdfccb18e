"""POST /process-generation (service_role only): run one Replicate generation, synchronously.

Body: the ``generate-image`` job parameters (prompt, model_id, model_version, width, height,
num_inference_steps, guidance_scale, seed, negative_prompt, source_image_url, strength).

    200 {"success": true, "output_url", "format", "width", "height",
         "generation_time_seconds"}
    400 {"success": false, "error": "..."}      bad parameters, or the model failed

The prediction's lifecycle is the worker's (``worker.lifecycle``): the same model input,
an img2img source fetched with the worker's safe fetcher (allowed hosts, size cap), create
with ``Prefer: wait`` and a ``Cancel-After`` bound, then poll; a prediction still running
at FUNCTIONS_GENERATE_TIMEOUT is cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions_compat.auth import TokenVerifier
from functions_compat.http import HttpError, json_response, read_json_object
from functions_compat.runtime import WorkerRuntime, WorkerRuntimes
from worker import lifecycle
from worker.errors import WorkerError
from worker.replicate.inputs import GenerationRequest, output_format, reported_size


def generate_once(rt: WorkerRuntime, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Blocking: one prediction from create to output URL (raises WorkerError subclasses)."""
    started = time.monotonic()
    control = lifecycle.Deadline(timeout, "FUNCTIONS_GENERATE_TIMEOUT")
    request = GenerationRequest.from_payload(body)
    model = rt.services.model
    prediction = lifecycle.create(
        model,
        rt.services.fetch_sources,
        request,
        catalogue=rt.services.generations,  # the catalogue decides, as for queued jobs
        cancel_after=timeout,
    )
    prediction = lifecycle.wait(control, model, prediction)
    url = lifecycle.first_output(prediction)
    width, height = reported_size(request)
    seconds = prediction.predict_time
    return {
        "success": True,
        "output_url": url,
        "format": output_format(request.model_id, url),
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
