"""The fake Replicate's timing, as the benchmarks rely on it: latency jitter that repeats
under a seed, lifecycle timestamps that match the time a prediction really took, and
per-prediction request counts (``/v1/_fake/predictions``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from devstack.pg import free_port
from devstack.stack import StackState

AUTH = {"Authorization": "Bearer r8_local_fake_token"}
FLUX = "/models/black-forest-labs/flux-schnell/predictions"


@pytest.fixture
def http(stack_state: StackState) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=stack_state.replicate_url, timeout=30.0)
    client.post("/_fake/reset", json={"predictions": True}).raise_for_status()
    yield client
    client.post("/_fake/reset", json={"predictions": True})
    client.close()


def _configure(http: httpx.Client, **patch: Any) -> None:
    http.post("/_fake/config", json=patch).raise_for_status()


def _create(http: httpx.Client, prompt: str, **extra: Any) -> dict[str, Any]:
    headers = {**AUTH, **extra.pop("headers", {})}
    response = http.post(FLUX, json={"input": {"prompt": prompt}, **extra}, headers=headers)
    assert response.status_code in (201, 202), response.text
    return dict(response.json())


def _records(http: httpx.Client) -> list[dict[str, Any]]:
    return list(http.get("/_fake/predictions").json()["predictions"])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _planned(http: httpx.Client, seed: int, count: int, **extra: Any) -> list[float]:
    http.post("/_fake/reset", json={"predictions": True}).raise_for_status()
    _configure(http, latency_seconds=0.2, latency_jitter=0.1, queue_seconds=0.0,
               random_seed=seed, **extra)
    for n in range(count):
        _create(http, f"jitter {n}")
    return [r["planned_latency"] for r in _records(http)]


def test_jitter_repeats_under_a_seed_whatever_else_draws(http: httpx.Client) -> None:
    first = _planned(http, seed=42, count=8)
    assert len(first) == 8
    assert all(0.1 <= x <= 0.3 for x in first), first
    assert len(set(first)) == 8  # jittered, not a fixed latency
    # Same seed: the same sequence, even when failures draw from the fake's other generator.
    assert _planned(http, seed=42, count=8, fail_rate=0.5) == first
    assert _planned(http, seed=43, count=8) != first


def test_timestamps_and_predict_time_match_the_time_it_took(http: httpx.Client) -> None:
    _configure(http, latency_seconds=0.3, latency_jitter=0.1, queue_seconds=0.05, random_seed=1)
    before = time.time()
    body = _create(http, "timed", headers={"Prefer": "wait=5"})
    after = time.time()
    assert body["status"] == "succeeded"
    created, started, completed = (_ts(body[k]) for k in ("created_at", "started_at",
                                                           "completed_at"))
    assert before - 0.01 <= created <= started <= completed <= after + 0.01
    assert started - created == pytest.approx(0.05, abs=0.04)
    assert body["metrics"]["predict_time"] == pytest.approx(completed - started, abs=1e-5)
    assert body["metrics"]["total_time"] == pytest.approx(completed - created, abs=1e-5)
    [record] = _records(http)
    assert record["id"] == body["id"] and record["completed_at"] == body["completed_at"]
    assert 0.2 <= record["planned_latency"] <= 0.4
    # The processing phase lasts the planned latency (plus the event loop's slack).
    assert record["planned_latency"] - 0.005 <= body["metrics"]["predict_time"]
    assert body["metrics"]["predict_time"] < record["planned_latency"] + 0.1


def test_requests_are_counted_per_prediction(http: httpx.Client) -> None:
    _configure(http, latency_seconds=5.0, queue_seconds=0.0)
    polled = _create(http, "polled")
    idle = _create(http, "idle")
    hooked = _create(http, "hooked", webhook=f"http://127.0.0.1:{free_port()}/hook",
                     webhook_events_filter=["start", "completed"])
    for _ in range(3):
        assert http.get(f"/predictions/{polled['id']}", headers=AUTH).status_code == 200
    assert http.post(f"/predictions/{polled['id']}/cancel", headers=AUTH).status_code == 200
    assert http.get("/predictions/nonexistent", headers=AUTH).status_code == 404
    by_id = {r["id"]: r for r in _records(http)}
    assert [r["prompt"] for r in _records(http)] == ["polled", "idle", "hooked"]
    assert (by_id[polled["id"]]["gets"], by_id[polled["id"]]["cancels"]) == (3, 1)
    assert by_id[polled["id"]]["status"] == "canceled"
    assert (by_id[idle["id"]]["gets"], by_id[idle["id"]]["cancels"]) == (0, 0)
    # The "start" event has been sent once processing began (queue_seconds = 0).
    deadline = time.monotonic() + 5
    while by_id[hooked["id"]]["webhooks"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        by_id = {r["id"]: r for r in _records(http)}
    assert by_id[hooked["id"]]["webhooks"] == 1
    assert by_id[idle["id"]]["webhooks"] == 0
