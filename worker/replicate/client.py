"""Replicate's predictions API over an injected ``httpx.Client``.

Errors are translated into the worker's tree (``worker.errors``):

    401 / 403              PermanentError     the token is wrong: a configuration problem
    402                    InsufficientCredit generate claims pause until credit is topped up
    404 / 413 / 422        InvalidInput       unknown model/version/prediction, bad input
                                              (``details["invalid_fields"]`` kept)
    429                    ProviderBusy       after in-process retries
    5xx, network, timeout  RetryableError     after in-process retries (GET/cancel only)
    prediction failed      PredictionFailed   the model's own error message
    canceled               JobCancelled when this client cancelled it, else PredictionFailed
    aborted                RetryableError     Cancel-After passed before it started

Retries (tenacity, capped exponential backoff with jitter, bounded in attempts and in total
sleep): GET and cancel retry on 429, 5xx and network errors. **Create retries only on 429
and on errors raised before the request left (connect errors, pool timeouts)**. Replicate
has no idempotency key: a create that timed out while reading, or answered 5xx, may
still have created (and will bill) a prediction, so repeating it could run the model twice.
Such failures surface as RetryableError with ``details["outcome_unknown"] = True``; the
job-level retry decides, and the caller persists prediction ids so a retry can resume.

The token goes only into the Authorization header and is never logged or put in an error.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from worker.errors import (
    DeadlineExceeded,
    InsufficientCredit,
    InvalidInput,
    JobCancelled,
    PermanentError,
    ProviderBusy,
    RetryableError,
)
from worker.ports import Prediction

__all__ = ["Prediction", "ReplicateClient", "RetryPolicy"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
MAX_WAIT_SECONDS = 60  # Prefer: wait=n accepts 1..60
MIN_CANCEL_AFTER = 5  # Cancel-After minimum (seconds)
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 8.0
    budget: float = 30.0  # total seconds of sleeping between attempts of one call


class _Status(Exception):
    """A retryable HTTP status (429 / 5xx), carried through tenacity."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class _SleepBudget(stop_base):
    """Stop when the next sleep would take the call's total sleeping past ``budget``."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        planned = float(retry_state.idle_for) + float(retry_state.upcoming_sleep or 0.0)
        return planned > self.budget


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text[:300]}
    return body if isinstance(body, dict) else {"detail": str(body)[:300]}


def _message(response: httpx.Response, problem: Mapping[str, Any]) -> str:
    text = problem.get("detail") or problem.get("title") or response.reason_phrase
    return f"Replicate HTTP {response.status_code}: {str(text).strip()[:500]}"


def _raise_for_status(response: httpx.Response, *, create: bool = False) -> None:
    code = response.status_code
    if code < 400:
        return
    problem = _problem(response)
    message = _message(response, problem)
    details: dict[str, Any] = {"status_code": code}
    for key in ("title", "detail", "invalid_fields"):
        if key in problem:
            details[key] = problem[key]
    if code in (401, 403):
        raise PermanentError(f"{message} (check REPLICATE_API_TOKEN)", details=details)
    if code == 402:
        raise InsufficientCredit(message, details=details)
    if code == 429:
        details["retry_after"] = _retry_after(response)
        raise ProviderBusy(message, details=details)
    if code >= 500:
        details["outcome_unknown"] = create
        raise RetryableError(message, details=details)
    if code in (404, 413, 422):
        raise InvalidInput(message, details=details)
    raise PermanentError(message, details=details)


def _transport_error(exc: httpx.TransportError, what: str, *, create: bool) -> RetryableError:
    unknown = create and not isinstance(exc, _NOT_SENT)
    suffix = " (the prediction may have been created)" if unknown else ""
    return RetryableError(
        f"Replicate {what}: {type(exc).__name__}{suffix}",
        details={"error": type(exc).__name__, "outcome_unknown": unknown},
    )


def _cancel_after(seconds: float) -> str:
    return f"{max(MIN_CANCEL_AFTER, math.ceil(seconds))}s"


class ReplicateClient:
    """Create, poll and cancel predictions; one instance is shared by the job threads."""

    def __init__(
        self,
        http: httpx.Client,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        wait_seconds: int = MAX_WAIT_SECONDS,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("a Replicate API token is required")
        self._http = http
        self._token = token
        self._base = base_url.rstrip("/")
        self._wait_seconds = max(1, min(MAX_WAIT_SECONDS, int(wait_seconds)))
        self._retry = retry or RetryPolicy()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._sleep = sleep
        self._clock = clock
        self._cancelled: deque[str] = deque(maxlen=1024)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplicateClient(base_url={self._base!r})"

    # -- API -----------------------------------------------------------------------------

    def create_prediction(
        self,
        model_id: str,
        version: str | None,
        input: Mapping[str, Any],
        *,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        cancel_after: float | None = None,
        wait: bool = True,
    ) -> Prediction:
        """Create a prediction: ``POST /models/{owner}/{name}/predictions`` for an official
        model (no version), else ``POST /predictions`` with ``version``."""
        body: dict[str, Any] = {"input": dict(input)}
        if version:
            path = "/predictions"
            body["version"] = version
        else:
            if not _MODEL.match(model_id):
                raise InvalidInput(f"model_id must be owner/name, got {model_id!r}")
            path = f"/models/{model_id}/predictions"
        if webhook:
            body["webhook"] = webhook
            if webhook_events_filter:
                body["webhook_events_filter"] = list(webhook_events_filter)
        headers: dict[str, str] = {}
        read = self._read_timeout
        if wait:
            headers["Prefer"] = f"wait={self._wait_seconds}"
            read = max(read, self._wait_seconds + 5.0)  # must outlast the server's hold
        if cancel_after is not None:
            headers["Cancel-After"] = _cancel_after(cancel_after)
        response = self._send("POST", path, body, headers, read, create=True)
        prediction = self._prediction(response)
        logger.info(
            "prediction %s created for %s (%s)",
            prediction.id,
            model_id,
            prediction.status,
            extra={
                "action": "replicate.create",
                "prediction_id": prediction.id,
                "model_id": model_id,
                "status": prediction.status,
            },
        )
        return prediction

    def get_prediction(self, prediction_id: str) -> Prediction:
        path = f"/predictions/{self._checked_id(prediction_id)}"
        return self._prediction(self._send("GET", path, None, {}, self._read_timeout))

    def cancel_prediction(self, prediction_id: str) -> Prediction:
        """Ask Replicate to cancel; a later ``canceled`` status is then JobCancelled."""
        path = f"/predictions/{self._checked_id(prediction_id)}/cancel"
        with self._lock:
            self._cancelled.append(prediction_id)
        prediction = self._prediction(self._send("POST", path, None, {}, self._read_timeout))
        logger.info(
            "prediction %s cancel requested (%s)",
            prediction_id,
            prediction.status,
            extra={"action": "replicate.cancel", "prediction_id": prediction_id},
        )
        return prediction

    def wait_for(
        self,
        prediction: Prediction,
        deadline: float,
        poll_interval: float = 1.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Prediction:
        """Poll until the prediction settles (see ``Prediction.settled``).

        ``deadline`` is a ``time.monotonic()`` instant. Raises DeadlineExceeded past it and
        JobCancelled when ``should_stop()`` turns true (checked between short sleeps);
        neither cancels the prediction: the caller decides. A failed prediction raises
        PredictionFailed; see the module docstring for canceled and aborted.
        """
        current = prediction
        while True:
            if self._settle(current):
                return current
            self._pause(current.id, deadline, poll_interval, should_stop)
            current = self.get_prediction(current.id)

    # -- internals -----------------------------------------------------------------------

    def _pause(
        self, pid: str, deadline: float, interval: float, should_stop: Callable[[], bool]
    ) -> None:
        end = self._clock() + max(0.05, interval)
        while True:
            if should_stop():
                raise JobCancelled(f"stopped while waiting for prediction {pid}")
            now = self._clock()
            if now >= deadline:
                raise DeadlineExceeded(
                    f"prediction {pid} did not finish before the job deadline",
                    details={"prediction_id": pid},
                )
            if now >= end:
                return
            self._sleep(min(0.25, end - now, deadline - now))

    def _settle(self, p: Prediction) -> bool:
        with self._lock:
            ours = p.id in self._cancelled
        return p.settle(cancelled_here=ours)

    @staticmethod
    def _checked_id(prediction_id: str) -> str:
        if not _PREDICTION_ID.match(prediction_id):
            raise InvalidInput(f"not a prediction id: {prediction_id!r}")
        return prediction_id

    @staticmethod
    def _prediction(response: httpx.Response) -> Prediction:
        try:
            return Prediction.from_json(response.json())
        except (ValueError, InvalidInput) as exc:
            raise RetryableError(
                f"Replicate answered HTTP {response.status_code} without a prediction"
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        read_timeout: float,
        *,
        create: bool = False,
    ) -> httpx.Response:
        request_headers = {"Authorization": f"Bearer {self._token}", **headers}
        timeout = httpx.Timeout(
            self._read_timeout, connect=self._connect_timeout, read=read_timeout
        )
        url = self._base + path
        what = "create" if create else f"{method} {path}"

        def once() -> httpx.Response:
            response = self._http.request(
                method, url, json=body, headers=request_headers, timeout=timeout
            )
            if response.status_code == 429 or (response.status_code >= 500 and not create):
                raise _Status(response)
            return response

        retrying = Retrying(
            retry=retry_if_exception(self._retryable_create if create else self._retryable),
            stop=stop_any(
                stop_after_attempt(self._retry.max_attempts), _SleepBudget(self._retry.budget)
            ),
            wait=self._backoff,
            sleep=self._sleep,
            before_sleep=self._log_retry(what),
            reraise=True,
        )
        try:
            response = retrying(once)
        except _Status as exc:
            response = exc.response
        except httpx.TransportError as exc:
            raise _transport_error(exc, what, create=create) from exc
        _raise_for_status(response, create=create)
        return response

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        return isinstance(exc, _Status | httpx.TransportError)

    @staticmethod
    def _retryable_create(exc: BaseException) -> bool:
        return isinstance(exc, (_Status, *_NOT_SENT))

    def _backoff(self, state: RetryCallState) -> float:
        policy = self._retry
        base = min(policy.max_wait, policy.initial_wait * 2.0 ** (state.attempt_number - 1))
        delay = base * (0.5 + random.random() / 2)  # equal jitter
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Status):
            hinted = _retry_after(exc.response)
            if hinted is not None:
                delay = max(delay, hinted)
        return delay

    @staticmethod
    def _log_retry(what: str) -> Callable[[RetryCallState], None]:
        def log(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "Replicate %s failed (%s); retry %d in %.1fs",
                what,
                exc,
                state.attempt_number,
                state.upcoming_sleep,
                extra={"action": "replicate.retry", "attempt": state.attempt_number},
            )

        return log
