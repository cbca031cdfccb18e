"""The retry policy is a pure function: table-driven tests."""

from __future__ import annotations

import pytest

from worker import errors
from worker.retry import decide, http_backoff, http_retryable


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (200, False),
        (400, False),
        (401, False),
        (402, False),
        (404, False),
        (422, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_http_retryable(status: int, retry: bool) -> None:
    assert http_retryable(status) is retry


def test_http_backoff_grows_and_is_capped() -> None:
    delays = [http_backoff(n, base=0.5, cap=8.0, jitter=0.0) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    jittered = {round(http_backoff(3, base=0.5, cap=8.0, jitter=0.25), 6) for _ in range(50)}
    assert len(jittered) > 1
    assert all(1.5 <= d <= 2.5 for d in jittered)


@pytest.mark.parametrize(
    ("exc", "attempt", "max_attempts", "retryable", "final"),
    [
        (errors.RetryableError("network"), 1, 3, True, False),
        (errors.RetryableError("network"), 3, 3, True, True),
        (errors.ProviderBusy("429"), 1, 3, True, False),
        (errors.DeadlineExceeded(), 2, 3, True, False),
        (errors.InvalidInput("422"), 1, 3, False, True),
        (errors.PredictionFailed("nsfw"), 1, 3, False, True),
        (errors.FetchRefused("private address"), 1, 3, False, True),
        (errors.MissingGeneration(), 1, 3, False, True),
        (RuntimeError("bug"), 1, 3, True, False),
        (RuntimeError("bug"), 3, 3, True, True),
    ],
)
def test_decide(
    exc: BaseException, attempt: int, max_attempts: int, retryable: bool, final: bool
) -> None:
    decision = decide(exc, attempt, max_attempts)
    assert decision.retryable is retryable
    assert decision.final is final
    assert decision.message


def test_decide_message_is_bounded() -> None:
    assert len(decide(errors.RetryableError("x" * 5000), 1, 3).message) == 1000


def test_error_messages_default_to_docstring() -> None:
    assert errors.DeadlineExceeded().message == "The job ran past its deadline."
    assert errors.InvalidInput("bad").retryable is False
    assert errors.ProviderBusy().retryable is True
