"""Adaptive provider polling (worker.replicate.polling): the request budget, the share of
it each replica takes, what is known of a model's durations and the schedule of looks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from worker.errors import JobCancelled
from worker.ports import Durations, Prediction
from worker.replicate.polling import (
    DEFAULT_INTERVAL,
    DENSE_FLOOR,
    MIN_SAMPLES,
    TAIL_CAP,
    PollPlanner,
    RequestBudget,
    provider_seconds,
    share_of,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def prediction(created: float, status: str = "processing", seconds: float | None = None
               ) -> Prediction:
    raw: dict[str, object] = {
        "id": "p1",
        "status": status,
        "created_at": datetime.fromtimestamp(created, UTC).isoformat(),
    }
    if seconds is not None:
        raw["completed_at"] = datetime.fromtimestamp(created + seconds, UTC).isoformat()
    return Prediction.from_json(raw)


# -- the budget ------
def test_the_budget_lets_a_second_worth_through_then_paces_at_its_rate() -> None:
    clock = Clock()
    budget = RequestBudget(600, clock=clock, sleep=clock.sleep)  # 10 requests a second
    for _ in range(10):
        budget.acquire()
    assert clock.slept == []
    budget.acquire()
    assert sum(clock.slept) == pytest.approx(0.1)
    budget.set_share(0.25)  # four equal replicas: 2.5 a second each
    assert budget.rate == pytest.approx(2.5)
    clock.slept.clear()
    budget.acquire()
    assert sum(clock.slept) == pytest.approx(0.4, abs=0.01)


def test_waiting_for_the_budget_stops_with_the_job() -> None:
    clock = Clock()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    budget.acquire()
    with pytest.raises(JobCancelled):
        budget.acquire(should_stop=lambda: True)


def test_replicas_share_the_budget_by_their_threads() -> None:
    peers = [("a", 3), ("b", 3), ("c", 6)]
    assert share_of("a", 3, peers) == pytest.approx(0.25)
    assert share_of("c", 6, peers) == pytest.approx(0.5)
    assert share_of("new", 3, peers) == pytest.approx(3 / 15)  # not listed yet: counted
    assert share_of("a", 3, []) == 1.0
    total = sum(share_of(w, c, peers) for w, c in peers)
    assert total == pytest.approx(1.0)  # together, never over the account's limit


# -- what is known of a model ------
def test_durations_come_from_this_worker_then_every_replica() -> None:
    planner = PollPlanner(RequestBudget(3000))
    assert planner.expected("m") is None
    for s in (4.0, 5.0, 6.0, 5.5):
        planner.learn("m", prediction(0, "succeeded", s))
    assert planner.expected("m") is None  # too few samples
    shared = Durations(n=50, p05=3.0, p50=5.0, p95=7.0, max=9.0)
    planner.refresh({"m": shared})
    assert planner.expected("m") == shared
    for _ in range(60):
        planner.learn("m", prediction(0, "succeeded", 5.0))
    mine = planner.expected("m")
    assert mine is not None and mine.n == 64 and mine.p50 == 5.0


def test_provider_seconds_are_the_providers_created_to_completed() -> None:
    assert provider_seconds(prediction(100.0, "succeeded", 3.25)) == pytest.approx(3.25)
    assert provider_seconds(prediction(100.0)) is None


# -- the schedule ------
def _planner(clock: Clock, p05: float, p50: float, p95: float,
             budget: float = 3000) -> PollPlanner:
    planner = PollPlanner(RequestBudget(budget), clock=clock)
    planner.refresh({"m": Durations(100, p05, p50, p95, p95 * 1.1)})
    return planner


def test_a_uniform_interval_when_set_or_when_the_model_is_unknown() -> None:
    clock = Clock()
    assert PollPlanner(RequestBudget(3000), uniform=0.5).plan("m").delay(prediction(0)) == 0.5
    assert PollPlanner(RequestBudget(3000), clock=clock).plan("m").delay(
        prediction(clock.now)) == DEFAULT_INTERVAL


def test_sparse_before_the_window_dense_in_it_then_less_and_less() -> None:
    clock = Clock()
    planner = _planner(clock, p05=7.3, p50=9.1, p95=10.9)
    created = clock.now
    plan = planner.plan("m")
    early = []
    clock.now = created + 1.0  # the create's Prefer: wait
    while (delay := plan.delay(prediction(created))) > 0.1:
        early.append(delay)
        clock.now += delay
    assert len(early) <= 4  # a few looks before the fast end ...
    assert 6.5 < clock.now - created < 7.3  # ... which is where the dense looks start
    assert DENSE_FLOOR <= delay <= 0.1
    clock.now = created + 20.0  # far past the slow end
    tail = [plan.delay(prediction(created)) for _ in range(12)]
    assert tail == sorted(tail) and tail[-1] == TAIL_CAP
    plan.close()


def test_the_dense_interval_widens_with_predictions_in_the_window_and_a_small_budget() -> None:
    clock = Clock()
    planner = _planner(clock, p05=2.0, p50=3.0, p95=4.0, budget=600)  # 10 requests a second
    created = clock.now - 3.0  # in the window
    plans = [planner.plan("m") for _ in range(5)]
    first = plans[0].delay(prediction(created))
    for plan in plans[1:]:
        plan.delay(prediction(created))
    assert plans[0].delay(prediction(created)) == pytest.approx(0.5)  # 5 share 10/s
    assert first == pytest.approx(0.1)
    for plan in plans:
        plan.close()
    assert planner.dense_interval() == pytest.approx(0.1)


@pytest.mark.parametrize("latency", [1.3, 3.7, 9.1])
def test_simulated_jittered_predictions_are_seen_soon_after_they_end(latency: float) -> None:
    """Predictions of L +- 20 %: polled as the daemon does, after the 1 s Prefer: wait."""
    rng = random.Random(15)
    clock = Clock()
    learned = PollPlanner(RequestBudget(3000), clock=clock)
    for _ in range(MIN_SAMPLES * 10):
        learned.learn("m", prediction(0, "succeeded", latency * rng.uniform(0.8, 1.2)))
    lags, looks = [], []
    for _ in range(200):
        took = latency * rng.uniform(0.8, 1.2)
        created = clock.now
        plan = learned.plan("m")
        clock.now = created + min(1.0, took)
        n = 0
        while clock.now < created + took:
            clock.now += plan.delay(prediction(created))
            n += 1
        plan.close()
        lags.append(clock.now - created - took)
        looks.append(n)
    lags.sort()
    assert lags[len(lags) // 2] <= 0.05  # median lag: half the dense interval
    assert lags[int(len(lags) * 0.99)] <= 0.15
    assert sum(looks) / len(looks) <= 6 + latency * 5  # GETs per prediction stay bounded


def test_elapsed_counts_from_the_providers_created_at() -> None:
    clock = Clock()
    planner = _planner(clock, p05=5.0, p50=6.0, p95=7.0)
    created = clock.now - 6.0  # created (by the provider's clock) 6 s ago: in the window
    assert planner.plan("m").delay(prediction(created)) <= 0.1
    unknown = Prediction.from_json({"id": "p2", "status": "starting"})  # no created_at
    assert planner.plan("m").delay(unknown) > 1.0  # counted from now: early


def test_timestamps_in_the_future_count_as_just_created() -> None:
    clock = Clock()
    planner = _planner(clock, p05=5.0, p50=6.0, p95=7.0)
    skewed = prediction(clock.now + 30.0)
    assert planner.plan("m").delay(skewed) >= 1.0
