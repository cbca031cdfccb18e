"""The status vocabulary: every status the worker and the functions read or write.

The database owns the rules (the check constraints ``job_queue_status_check_v2`` and
``image_generations_status_check_v2``, and the transitions written in SQL); Python only
holds the names, so no module spells a status as a bare string.
``tests/db/test_statuses.py`` checks these sets against the constraints of the real
database. Members are ``StrEnum``s: they compare equal to, and serialise as, their text.

    job_queue.status          pending -> processing -> completed | failed | cancelled
                              (processing -> pending again on a retry or a release)
    image_generations.status  pending -> queued -> processing -> downloading -> completed,
                              or failed / cancelled
    Replicate prediction      starting -> processing -> succeeded | failed | canceled | aborted
                              (Replicate's spelling: ``canceled``)
    job outcome               what one run of a job ended as (the runner's log and metrics)
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class GenerationStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    DOWNLOADING = "downloading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PredictionStatus(StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"


class JobOutcome(StrEnum):
    """How one run of a job ended (``job.<outcome>`` log actions, the ``outcome`` label)."""

    COMPLETED = "completed"
    RETRY = "retry"  # failed, another attempt follows
    FAILED = "failed"  # failed for good
    CANCELLED = "cancelled"  # the user cancelled the generation
    LEASE_LOST = "lease_lost"
    RELEASED = "released"  # given back unfinished (shutdown)
    PAUSED = "paused"  # out of provider credit: given back, generate claims paused


# -- sets ------
JOB_LIVE = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})  # what a dedupe key guards
JOB_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

GENERATION_TERMINAL = frozenset(
    {GenerationStatus.COMPLETED, GenerationStatus.FAILED, GenerationStatus.CANCELLED}
)
# A prediction's outcome is known once the generation is past `processing`.
GENERATION_ADVANCED = GENERATION_TERMINAL | {GenerationStatus.DOWNLOADING}

PREDICTION_TERMINAL = frozenset(
    {
        PredictionStatus.SUCCEEDED,
        PredictionStatus.FAILED,
        PredictionStatus.CANCELED,
        PredictionStatus.ABORTED,
    }
)
PREDICTION_RUNNING = frozenset({PredictionStatus.STARTING, PredictionStatus.PROCESSING})
PREDICTION_STOPPED = frozenset({PredictionStatus.CANCELED, PredictionStatus.ABORTED})

# process-jobs counts every other outcome as an error; the daemon counts these as failed.
OUTCOME_OK = frozenset({JobOutcome.COMPLETED, JobOutcome.CANCELLED})
OUTCOME_FAILED = frozenset({JobOutcome.FAILED, JobOutcome.RETRY})
