"""In-memory model and fetch ports, for fast tests of the handlers, the runner and the loop.

``MemoryModel`` plays Replicate's predictions from a ``Script`` (the statuses a prediction
walks through, one per poll, and how it ends) and records every call; ``MemoryFetcher``
answers URLs from a table. Both return the same value types as the real ports
(``Prediction``, ``Fetched``) and raise the same errors, so the code under test cannot
tell them apart. The real ones are tested against the fake Replicate and real sockets.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from worker.errors import DeadlineExceeded, FetchRefused, InvalidInput, JobCancelled
from worker.ports import Fetched, Prediction
from worker.statuses import PREDICTION_TERMINAL, PredictionStatus

OUTPUT_URL = "https://replicate.delivery/memory/{id}.webp"


@dataclass(frozen=True)
class Script:
    """How a prediction goes: ``steps`` are its statuses at creation and after each poll
    (the last one repeats); a succeeded one has ``output`` (``{id}`` is replaced), a
    failed one ``error``."""

    steps: Sequence[str] = (PredictionStatus.SUCCEEDED,)
    output: str = OUTPUT_URL
    error: str | None = None
    predict_time: float | None = 1.25


HANG = Script(steps=(PredictionStatus.STARTING, PredictionStatus.PROCESSING))


@dataclass(frozen=True)
class CreateCall:
    model_id: str
    version: str | None
    input: Mapping[str, object]
    webhook: str | None
    cancel_after: float | None
    wait: bool


@dataclass
class _Run:
    id: str
    script: Script
    model_id: str
    step: int = 0
    cancelled: bool = False

    @property
    def status(self) -> str:
        if self.cancelled:
            return PredictionStatus.CANCELED
        return self.script.steps[min(self.step, len(self.script.steps) - 1)]

    def snapshot(self) -> Prediction:
        status = self.status
        raw: dict[str, object] = {"id": self.id, "status": status, "model": self.model_id}
        if status == PredictionStatus.SUCCEEDED:
            raw["output"] = self.script.output.format(id=self.id)
            if self.script.predict_time is not None:
                raw["metrics"] = {"predict_time": self.script.predict_time}
        if status == PredictionStatus.FAILED:
            raw["error"] = self.script.error or "the model crashed"
        return Prediction.from_json(raw)


class MemoryModel:
    """The model port (``ImageModel``) in memory."""

    def __init__(self, script: Script | None = None, *, poll_seconds: float = 0.002) -> None:
        self.script = script or Script()
        self.scripts: dict[str, Script] = {}  # by model_id, over ``script``
        self.poll_seconds = poll_seconds
        self.create_errors: list[Exception] = []  # raised by the next creates, in order
        self.created: list[CreateCall] = []
        self.cancelled: list[str] = []
        self.runs: dict[str, _Run] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def create_prediction(
        self,
        model_id: str,
        version: str | None,
        input: Mapping[str, object],
        *,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        cancel_after: float | None = None,
        wait: bool = True,
    ) -> Prediction:
        with self._lock:
            if self.create_errors:
                raise self.create_errors.pop(0)
            self.created.append(CreateCall(model_id, version, input, webhook, cancel_after, wait))
            run = _Run(f"mem-{next(self._ids)}", self.scripts.get(model_id, self.script), model_id)
            self.runs[run.id] = run
            return run.snapshot()

    def get_prediction(self, prediction_id: str) -> Prediction:
        """One poll: the prediction moves one step on."""
        with self._lock:
            run = self._run(prediction_id)
            if run.status not in PREDICTION_TERMINAL:
                run.step += 1
            return run.snapshot()

    def cancel_prediction(self, prediction_id: str) -> Prediction:
        with self._lock:
            run = self._run(prediction_id)
            self.cancelled.append(prediction_id)
            if run.status not in PREDICTION_TERMINAL:
                run.cancelled = True
            return run.snapshot()

    def wait_for(
        self,
        prediction: Prediction,
        deadline: float,
        poll_interval: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Prediction:
        current = prediction
        while not current.settle(cancelled_here=current.id in self.cancelled):
            if should_stop():
                raise JobCancelled(f"stopped while waiting for prediction {current.id}")
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"prediction {current.id} did not finish in time")
            time.sleep(self.poll_seconds)
            current = self.get_prediction(current.id)
        return current

    def _run(self, prediction_id: str) -> _Run:
        run = self.runs.get(prediction_id)
        if run is None:  # Replicate answers 404
            raise InvalidInput(f"Replicate HTTP 404: prediction {prediction_id} not found")
        return run


def image(fmt: str = "webp", width: int | None = 64, height: int | None = 64) -> Fetched:
    """Checked image bytes as the fetch port returns them (the bytes are a stand-in)."""
    kinds = {"webp": "image/webp", "png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif"}
    kinds["svg"] = "image/svg+xml"
    return Fetched(f"<{fmt} {width}x{height}>".encode(), kinds[fmt], fmt, width, height)


@dataclass
class MemoryFetcher:
    """The fetch port (``Fetcher``) in memory: ``responses`` by URL (an exception is raised),
    else ``default``; an unknown URL with no default is refused like a bad host."""

    responses: dict[str, Fetched | Exception] = field(default_factory=dict)
    default: Fetched | None = field(default_factory=image)
    fetched: list[str] = field(default_factory=list)

    def fetch(self, url: str, *, expect: set[str] | None = None) -> Fetched:
        self.fetched.append(url)
        answer = self.responses.get(url, self.default)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            raise FetchRefused(f"host of {url} is not on the allowed list")
        if expect is not None and answer.format not in expect:
            raise FetchRefused(f"expected {' or '.join(sorted(expect))}, got {answer.format}")
        return answer
