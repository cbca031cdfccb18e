"""When to look at a running prediction, and how many looks the account can afford.

Replicate reports nothing while a prediction runs (webhook mode aside), so a worker polls
``GET /v1/predictions/{id}``. Replicate allows about 3,000 such requests a minute per
account, shared by every replica, and a prediction is seen on average half a poll interval
after it ends. Two parts:

- ``RequestBudget``: a token bucket every non-create request passes (GET, cancel). Its rate
  is this worker's share of WORKER_REPLICATE_REQUEST_BUDGET (requests per minute for the
  whole account): the daemon sets the share from the live workers of the registry
  (``heartbeat_worker``), weighted by their thread counts, so the replicas together stay
  under the account's limit.
- ``PollPlanner``: per model, the recent durations (created -> completed as the provider
  reports them) learned from this worker's own predictions and refreshed from every
  replica's (``prediction_stats``, rarely). A prediction is looked at sparsely before its
  model's fast end (p05), densely until its slow end (p95), then less and less often. The
  dense interval is the budget's rate shared by this worker's predictions in their dense
  window, never under ``DENSE_FLOOR``. A model with too few samples, and every model when
  WORKER_REPLICATE_POLL_INTERVAL is set, is polled at one uniform interval.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime

from worker.errors import JobCancelled
from worker.jobs import parse_ts
from worker.ports import Durations, Prediction

DENSE_FLOOR = 0.05  # s: the shortest interval between two looks at one prediction
DEFAULT_INTERVAL = 0.5  # s: a model with too few samples (Replicate's own client's interval)
EARLY_MIN = 1.0  # s: before the window, look at most this often (early failures show up)
TAIL_GROWTH = 1.5  # past the window, each interval this much longer than the last ...
TAIL_CAP = 5.0  # ... up to this
MIN_SAMPLES = 5  # fewer recent durations than this: the uniform interval
KEEP = 200  # durations kept per model


class RequestBudget:
    """Token bucket for the non-create requests of this worker (thread-safe)."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.share = 1.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._at = clock()
        self.waited = 0.0  # seconds requests spent waiting for a token (metrics, tests)

    @property
    def rate(self) -> float:
        """Requests per second this worker may make."""
        return max(self.per_minute * self.share / 60.0, 1e-3)

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate)  # one second's worth

    def set_share(self, share: float) -> None:
        with self._lock:
            self.share = min(1.0, max(share, 0.0))

    def acquire(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Take a token, waiting for one (in short sleeps that check ``should_stop``)."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                wait = (1.0 - self._tokens) / self.rate
            if should_stop():
                raise JobCancelled("stopped while waiting for the provider request budget")
            pause = min(max(wait, 0.001), 0.25)
            self.waited += pause
            self._sleep(pause)


def share_of(worker_id: str, concurrency: int, peers: list[tuple[str, int]]) -> float:
    """This worker's share of the account's budget: its threads over the threads of the
    live polling workers (itself counted once, whether or not the registry listed it)."""
    others = sum(max(1, c) for wid, c in peers if wid != worker_id)
    mine = max(1, concurrency)
    return mine / (mine + others)


def provider_seconds(prediction: Prediction) -> float | None:
    """Created -> completed as the provider reports them."""
    created = _ts(prediction.raw.get("created_at"))
    completed = _ts(prediction.raw.get("completed_at"))
    if created is None or completed is None:
        return None
    seconds = (completed - created).total_seconds()
    return seconds if seconds >= 0 else None


def _ts(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_ts(value)
    except ValueError:
        return None


class PollPlanner:
    """Recent durations per model and the polling schedule they give (thread-safe)."""

    def __init__(
        self,
        budget: RequestBudget,
        *,
        uniform: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budget = budget
        self.uniform = uniform
        self._clock = clock
        self._lock = threading.Lock()
        self._mine: dict[str, deque[float]] = {}  # learned here
        self._shared: dict[str, Durations] = {}  # every replica's, from prediction_stats
        self._dense = 0  # predictions of this worker now in their dense window

    # -- what it knows ------
    def learn(self, model_id: str, prediction: Prediction) -> None:
        seconds = provider_seconds(prediction)
        if seconds is None or not model_id:
            return
        with self._lock:
            self._mine.setdefault(model_id, deque(maxlen=KEEP)).append(seconds)

    def refresh(self, stats: Mapping[str, Durations]) -> None:
        with self._lock:
            self._shared = dict(stats)

    def expected(self, model_id: str) -> Durations | None:
        """The model's durations: this worker's own when it has enough, else the shared ones."""
        with self._lock:
            mine = list(self._mine.get(model_id, ()))
            shared = self._shared.get(model_id)
        if len(mine) >= MIN_SAMPLES and (shared is None or len(mine) >= shared.n):
            return Durations.of(mine)
        if shared is not None and shared.n >= MIN_SAMPLES:
            return shared
        return Durations.of(mine) if len(mine) >= MIN_SAMPLES else None

    # -- the schedule ------
    def plan(self, model_id: str) -> Plan:
        return Plan(self, model_id)

    def dense_interval(self) -> float:
        with self._lock:
            dense = max(1, self._dense)
        return max(DENSE_FLOOR, dense / self.budget.rate)

    def _enter_dense(self, delta: int) -> None:
        with self._lock:
            self._dense = max(0, self._dense + delta)


class Plan:
    """The looks at one prediction: ``delay(prediction)`` -> seconds until the next GET;
    ``close()`` when done (it leaves the dense window's count)."""

    def __init__(self, planner: PollPlanner, model_id: str) -> None:
        self.planner = planner
        self.model_id = model_id
        self.expected = None if planner.uniform is not None else planner.expected(model_id)
        self._dense = False
        self._tail = 0
        self._first_seen: float | None = None

    def delay(self, prediction: Prediction) -> float:
        planner = self.planner
        if planner.uniform is not None:
            return planner.uniform
        exp = self.expected
        if exp is None:
            return DEFAULT_INTERVAL
        elapsed = self._elapsed(prediction)
        dense = planner.dense_interval()
        pad = 0.05 * exp.p50 + dense
        lo, hi = max(0.0, exp.p05 - pad), exp.p95 + pad
        if elapsed < lo:
            self._set_dense(False)
            return max(DENSE_FLOOR, min(lo - elapsed, max(EARLY_MIN, lo / 3)))
        if elapsed <= hi:
            self._set_dense(True)
            return min(dense, max(DENSE_FLOOR, hi - elapsed))
        self._set_dense(False)
        self._tail += 1
        return min(TAIL_CAP, dense * TAIL_GROWTH**self._tail)

    def close(self) -> None:
        self._set_dense(False)

    def _elapsed(self, prediction: Prediction) -> float:
        now = self.planner._clock()
        created = _ts(prediction.raw.get("created_at"))
        if created is not None:
            return max(0.0, now - created.timestamp())
        if self._first_seen is None:
            self._first_seen = now
        return now - self._first_seen

    def _set_dense(self, dense: bool) -> None:
        if dense != self._dense:
            self._dense = dense
            self.planner._enter_dense(1 if dense else -1)

