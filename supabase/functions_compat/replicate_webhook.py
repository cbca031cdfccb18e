"""POST /replicate-webhook (no user JWT: Replicate's signature): a prediction finished.

    200 {"received": true, "job_id": "...", "duplicate": false}  process-webhook enqueued
                                      (or joined: one live job per prediction)
    200 {"received": true, "ignored": "prediction <status>"}  not terminal: nothing to do
    400 a webhook header missing or malformed (webhook-timestamp: 1 to 12 ASCII digits),
        or the body is not a prediction
    401 bad signature, or webhook-timestamp outside FUNCTIONS_WEBHOOK_TOLERANCE (either way)
    409 this webhook-id was already received (a replay); nothing is enqueued
    405 not POST, 413 body over the cap, 500 not configured or the database failed
                                      (Replicate retries; nothing was recorded)

Order: the headers and the timestamp are checked before a byte of the body is read; then
the body streams in, through the HMAC (Standard Webhooks, over the raw bytes), under a cap
of 4/3 x WORKER_MAX_IMAGE_BYTES + 64 KiB (a delivery echoes the prediction's input,
img2img data URIs included): a declared or streamed length past it is a 413 at once,
without reading the rest. Then the signature is compared (constant time), and one
transaction (``public.record_webhook``) records the delivery id and enqueues the job; the
200 is sent only after it committed. No Replicate call is made here, so the answer takes
milliseconds. The job carries the raw body and its signature headers (the worker verifies
them again before trusting the body); a body over 64 KiB is not stored: the job fetches the
prediction instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from supabase import Client

from functions_compat.config import FunctionsConfig
from functions_compat.http import HttpError, json_response
from worker.statuses import PREDICTION_TERMINAL
from worker.webhooks import SignatureCheck, WebhookSignatureError, is_unix_seconds

log = logging.getLogger("functions_compat.replicate_webhook")

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
INLINE_BODY_BYTES = 64 * 1024  # larger bodies are not copied into the job
MAX_ID_CHARS = 256
MAX_SIGNATURE_CHARS = 4096


class WebhookStore:
    """``public.record_webhook`` through PostgREST with the service key."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def record(
        self, webhook_id: str, prediction_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        params = {
            "p_webhook_id": webhook_id,
            "p_prediction_id": prediction_id,
            "p_payload": payload,
        }

        def run() -> Any:
            return self._client.rpc("record_webhook", params).execute().data

        try:
            data = await run_in_threadpool(run)
        except Exception as exc:
            log.warning(
                "record_webhook failed for prediction %s: %s: %s",
                prediction_id,
                type(exc).__name__,
                exc,
            )
            raise HttpError(500, "Could not record the webhook delivery") from None
        if not isinstance(data, dict):
            log.error("record_webhook returned %r", data)
            raise HttpError(500, "Could not record the webhook delivery")
        return data


class ReplicateWebhook:
    def __init__(self, config: FunctionsConfig, store: WebhookStore) -> None:
        self.config = config
        self.store = store

    async def __call__(self, request: Request) -> Response:
        secret = self.config.webhook_secret
        if secret is None:
            raise HttpError(
                500, "replicate-webhook is not configured: REPLICATE_WEBHOOK_SECRET is not set"
            )
        headers = _signature_headers(request)
        try:
            check = SignatureCheck(secret, headers, tolerance_s=self.config.webhook_tolerance)
            body = await _read(request, check, self.config.webhook_max_bytes)
            check.verify()
        except WebhookSignatureError as exc:
            log.warning("webhook %s rejected: %s", headers["webhook-id"][:64], exc.message)
            raise HttpError(401, f"Invalid webhook: {exc.message}") from None
        text, prediction_id, status = _prediction(body)
        if status not in PREDICTION_TERMINAL:
            return json_response({"received": True, "ignored": f"prediction {status}"})
        payload: dict[str, Any] = {"status": status, "webhook": headers}
        if len(body) <= INLINE_BODY_BYTES:
            payload["body"] = text
        else:
            payload["fetch"] = True
        result = await self.store.record(headers["webhook-id"], prediction_id, payload)
        if result.get("duplicate"):
            log.info("webhook %s replayed (prediction %s)", headers["webhook-id"], prediction_id)
            raise HttpError(409, "Webhook delivery already received", duplicate=True)
        job_id = result.get("job_id")
        if not job_id:
            log.error("record_webhook returned %r", result)
            raise HttpError(500, "Could not record the webhook delivery")
        log.info(
            "webhook %s: prediction %s %s -> job %s",
            headers["webhook-id"],
            prediction_id,
            status,
            job_id,
        )
        return json_response({"received": True, "job_id": str(job_id), "duplicate": False})


def _signature_headers(request: Request) -> dict[str, str]:
    found = {name: (request.headers.get(name) or "").strip() for name in HEADERS}
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise HttpError(400, f"Missing webhook header(s): {', '.join(missing)}")
    if not is_unix_seconds(found["webhook-timestamp"]):
        raise HttpError(400, "webhook-timestamp must be unix seconds (ASCII digits)")
    if len(found["webhook-id"]) > MAX_ID_CHARS:
        raise HttpError(400, f"webhook-id is longer than {MAX_ID_CHARS} characters")
    if len(found["webhook-signature"]) > MAX_SIGNATURE_CHARS:
        raise HttpError(400, "webhook-signature is too long")
    return found


async def _read(request: Request, check: SignatureCheck, limit: int) -> bytes:
    """The body, fed to the HMAC chunk by chunk; 413 as soon as it is known to pass
    ``limit`` (declared, or while streaming), leaving the rest unread."""
    declared = request.headers.get("content-length", "")
    too_large = HttpError(413, f"Request body too large (limit {limit} bytes)")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        check.update(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


def _prediction(body: bytes) -> tuple[str, str, str]:
    """(body text, prediction id, status) of a signed body; 400 if it is not a prediction."""
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, "Webhook body is not JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "Webhook body is not a prediction")
    pid, status = data.get("id"), data.get("status")
    if not isinstance(pid, str) or not pid.strip() or len(pid) > MAX_ID_CHARS:
        raise HttpError(400, "Webhook body is not a prediction: no id")
    if not isinstance(status, str) or not status:
        raise HttpError(400, "Webhook body is not a prediction: no status")
    return text, pid, status
