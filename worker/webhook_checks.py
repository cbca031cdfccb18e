"""The safety net of webhook mode: no generation waits forever for a lost webhook.

Every webhook-mode worker calls ``run`` every ``interval`` seconds (at most 30). It asks the
database (``enqueue_webhook_checks``) to enqueue a ``process-webhook`` job with
``{"prediction_id", "fetch": true}`` for each generation still `processing` with a
prediction id, no live job and no change for WORKER_WEBHOOK_CHECK_AFTER seconds. The job
fetches the prediction and advances the generation exactly as a delivery would; a
prediction still running only touches the row, so it is checked again after the same
delay. The jobs' dedupe key (``webhook:<prediction_id>``) makes concurrent runs by several
workers harmless. (There is no pg_cron schedule for it: it would enqueue checks in
deployments that never use webhooks; webhook-mode workers run it, with their own delay.)
"""

from __future__ import annotations

import logging

from worker.errors import WorkerError
from worker.services import Services
from worker.settings import Settings

log = logging.getLogger("worker.webhook_checks")

MAX_INTERVAL = 30.0
BATCH = 100


def interval(settings: Settings) -> float:
    """Seconds between two runs: a quarter of the check delay, between 1 and 30."""
    return max(1.0, min(MAX_INTERVAL, settings.webhook_check_after / 4))


def run(services: Services) -> int:
    """Enqueue the checks that are due (blocking: call it off the event loop)."""
    settings = services.settings
    extra = {"worker_id": settings.worker_id}
    try:
        count = services.queue.enqueue_webhook_checks(settings.webhook_check_after, BATCH)
    except WorkerError as exc:
        log.warning(
            "enqueue_webhook_checks failed: %s",
            exc.message,
            extra={"action": "webhook.check_failed", **extra},
        )
        return 0
    if count:
        log.info(
            "%d generation(s) without a webhook after %ds: fetching their predictions",
            count,
            settings.webhook_check_after,
            extra={"action": "webhook.checks_enqueued", "count": count, **extra},
        )
    return count
