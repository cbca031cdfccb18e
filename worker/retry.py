"""Retry policy as pure functions (table-driven tests in tests/unit/test_retry.py).

Two levels:
- in-process: ``http_retryable`` says which HTTP failures a tenacity loop retries at once
  (a few tries within seconds), and ``http_backoff`` the delays;
- job level: ``decide(exc, job)`` says whether a failed attempt goes back to the queue
  (``complete_job`` with ``p_retryable``) and what the generation shows meanwhile.
The database applies the job-level backoff (complete_job: 2 s doubling, capped, jittered).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.errors import JobError

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


def http_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS


def http_backoff(
    attempt: int, *, base: float = 0.5, cap: float = 8.0, jitter: float = 0.25
) -> float:
    """Delay before in-process retry ``attempt`` (1-based): base * 2^(n-1), capped, +-jitter."""
    delay = min(cap, base * (2 ** max(attempt - 1, 0)))
    return float(max(0.0, delay * (1 + random.uniform(-jitter, jitter))))


@dataclass(frozen=True)
class Decision:
    retryable: bool  # passed to complete_job as p_retryable
    final: bool  # no attempt will follow: the generation fails now
    message: str


def decide(exc: BaseException, attempt: int, max_attempts: int) -> Decision:
    """What a failed attempt means for the job and its generation."""
    if isinstance(exc, JobError):
        retryable = exc.retryable
        message = exc.message
    else:  # a bug or an unexpected library error: retry, it may be transient
        retryable = True
        message = f"internal error: {type(exc).__name__}: {exc}"
    final = not retryable or attempt >= max_attempts
    return Decision(retryable=retryable, final=final, message=message[:1000])
