"""One exception tree for the worker, classified by what the runner does next.

    WorkerError
    ├── ConfigError                 bad settings: the process exits with one clear line
    ├── JobError                    a job attempt failed; ``retryable`` decides its fate
    │   ├── RetryableError          transient: network, timeouts, HTTP 429 / 5xx
    │   │   ├── ProviderBusy        Replicate 429 (throttled)
    │   │   ├── DeadlineExceeded    the job ran past WORKER_JOB_TIMEOUT
    │   │   ├── InsufficientCredit  Replicate 402: generate claims pause for a while
    │   │   └── SchemaNotReady      PostgREST's schema cache lacks a function or table
    │   │                           (PGRST202/PGRST205 right after a migration): the job
    │   │                           is released, its attempt given back
    │   └── PermanentError          fail now, no retry is spent
    │       ├── InvalidInput        the provider rejected the input (422) or the model is unknown
    │       ├── PredictionFailed    the model ran and failed (NSFW, crash, canceled, aborted)
    │       ├── FetchRefused        a URL failed the safe-fetch rules (scheme, host, address,
    │       │                       size, content type)
    │       ├── MissingGeneration   the job's generation row does not exist
    │       ├── Misconfigured       Supabase refused the key (401/403), or a migration is
    │       │                       missing for good: the operator must act
    │       └── GenerationClosed    the generation was cancelled, failed or deleted: its
    │                               image is not stored (the database refused it, PT410)
    ├── JobCancelled                the generation was cancelled while the job ran
    └── LeaseLost                   complete_job/heartbeat_job says the job is no longer ours

Adapters translate library errors (httpx, postgrest) into these with ``raise X from exc``;
the core never sees a library exception.
"""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ConfigError(WorkerError):
    """The configuration is invalid."""


class JobError(WorkerError):
    """A job attempt failed."""

    retryable: bool = True

    def __init__(
        self, message: str | None = None, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = details or {}


class RetryableError(JobError):
    """A transient failure; the job is retried later."""

    retryable = True


class ProviderBusy(RetryableError):
    """The provider throttled us (HTTP 429)."""


class DeadlineExceeded(RetryableError):
    """The job ran past its deadline."""


class InsufficientCredit(RetryableError):
    """The provider account has no credit (HTTP 402); generation pauses until it is topped up."""


class SchemaNotReady(RetryableError):
    """PostgREST's schema cache does not list a function or table yet (just migrated)."""


class PermanentError(JobError):
    """A failure that no retry can fix."""

    retryable = False


class InvalidInput(PermanentError):
    """The provider rejected the input."""


class PredictionFailed(PermanentError):
    """The prediction ended without an image."""


class FetchRefused(PermanentError):
    """A URL was refused by the safe-fetch rules."""


class MissingGeneration(PermanentError):
    """The job's generation does not exist."""


class Misconfigured(PermanentError):
    """Supabase refused the request: a wrong key, a missing grant or a missing migration."""


class GenerationClosed(PermanentError):
    """The generation was cancelled, failed or deleted; its image is not stored."""


class JobCancelled(WorkerError):
    """The generation was cancelled while its job ran."""


class LeaseLost(WorkerError):
    """The job is no longer held by this worker (requeued, cancelled or taken over)."""
