"""Job handlers by job type."""

from __future__ import annotations

from worker.context import Handler
from worker.handlers import cleanup_storage, download_image, generate_image, process_webhook
from worker.jobs import CLEANUP_STORAGE, DOWNLOAD_IMAGE, GENERATE_IMAGE, PROCESS_WEBHOOK

HANDLERS: dict[str, Handler] = {
    GENERATE_IMAGE: generate_image.handle,
    DOWNLOAD_IMAGE: download_image.handle,
    PROCESS_WEBHOOK: process_webhook.handle,
    CLEANUP_STORAGE: cleanup_storage.handle,
}
