"""Job handlers by job type."""

from __future__ import annotations

from worker.handlers import cleanup_storage, download_image, generate_image, process_webhook
from worker.handlers.base import Handler

HANDLERS: dict[str, Handler] = {
    "generate-image": generate_image.handle,
    "download-image": download_image.handle,
    "process-webhook": process_webhook.handle,
    "cleanup-storage": cleanup_storage.handle,
}
