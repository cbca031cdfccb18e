"""POST /generate-image (legacy, user JWT): the synchronous API, now served by the queue.

The request is validated and enqueued exactly like start-generation (same RPC, same
limits), then the generation row is polled until it is completed, failed or cancelled,
for at most FUNCTIONS_GENERATE_TIMEOUT seconds. Whoever processes the queue (the daemon,
or process-jobs) does the work.

- with ``generation_id`` (the original API: the client created a ``pending`` row first),
  that row, which must be the caller's and still pending, is queued and answered as
  ``{"success": true, "image": {images row}, "generation_time": s}``;
- without it: ``{"success": true, "url": public_url, "format": "...", "generation_time": s}``.

``generation_time`` is the wall-clock seconds the call took (what the synchronous original
measured and what its caller waited). Errors are ``{"error": ...}`` with 400 (bad input, the
generation failed or was cancelled), 401, 429, and 504 when the wait runs out; the
generation then carries on in the background and the 504 body names it
(``generation_id``), so the client can keep watching the row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions_compat.auth import TokenVerifier
from functions_compat.db import ServiceDb
from functions_compat.http import HttpError, json_response, read_json_object
from functions_compat.start_generation import GenerationStarter
from worker.statuses import GENERATION_TERMINAL, GenerationStatus

POLL_START = 0.2
POLL_MAX = 1.0


class GenerateImage:
    def __init__(
        self,
        verifier: TokenVerifier,
        starter: GenerationStarter,
        db: ServiceDb,
        timeout: float,
    ) -> None:
        self.verifier = verifier
        self.starter = starter
        self.db = db
        self.timeout = timeout

    async def __call__(self, request: Request) -> Response:
        started_at = time.monotonic()
        caller = await self.verifier.user(request)
        body = self.starter.parse(await read_json_object(request), allow_generation_id=True)
        started = await self.starter.start(caller, body)
        row = await self._wait(started.generation_id, started_at + self.timeout)
        status = row.get("status")
        if status == GenerationStatus.FAILED:
            raise HttpError(400, str(row.get("error_message") or "Image generation failed"))
        if status == GenerationStatus.CANCELLED:
            raise HttpError(400, "The generation was cancelled")
        image = await self.db.image_for(started.generation_id)
        if image is None:
            raise HttpError(500, "The generation completed without an image")
        seconds = round(time.monotonic() - started_at, 3)
        if body.generation_id is not None:
            return json_response({"success": True, "image": image, "generation_time": seconds})
        return json_response(
            {
                "success": True,
                "url": image.get("public_url"),
                "format": image.get("format"),
                "generation_time": seconds,
            }
        )

    async def _wait(self, generation_id: str, deadline: float) -> Mapping[str, Any]:
        delay = POLL_START
        while True:
            row = await self.db.generation(generation_id)
            if row is None:
                raise HttpError(400, "The generation no longer exists")
            if row.get("status") in GENERATION_TERMINAL:
                return row
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HttpError(
                    504,
                    f"The image is not ready after {self.timeout:g}s; it is still being "
                    "generated in the background",
                    generation_id=generation_id,
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(POLL_MAX, delay * 1.5)
