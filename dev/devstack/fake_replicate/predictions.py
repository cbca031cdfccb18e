"""Prediction records and their lifecycle: starting -> processing -> terminal.

Each prediction is driven by one asyncio task that sleeps through the configured latency
(no threads; only Pillow rendering runs in a worker thread). ``Cancel-After`` deadlines are
checked inside the same task: a deadline reached in ``starting`` aborts the prediction, one
reached in ``processing`` cancels it. Records expire like Replicate's: after
``file_ttl_seconds`` the output, input and logs are removed (``data_removed: true``), after
``prediction_ttl_seconds`` the record is forgotten (404), and at most ``max_predictions``
are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devstack.fake_replicate.config import Directives, FakeConfig
from devstack.fake_replicate.images import OutputSpec
from devstack.fake_replicate.schemas import ModelSchema

log = logging.getLogger("devstack.fake_replicate")

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
DEFAULT_EVENTS = frozenset({"output", "completed"})
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_prediction_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(26))


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Plan:
    """How a prediction will end, decided at creation."""

    latency: float
    outcome: str  # succeeded | failed | aborted
    error: str | None = None


def make_plan(
    schema: ModelSchema,
    given: dict[str, Any],
    cfg: FakeConfig,
    rng: random.Random,
    latency_rng: random.Random,
) -> Plan:
    """``latency_rng`` draws the jitter only (one draw per prediction when jitter is on),
    so the latency sequence under a seed does not depend on the other random choices."""
    prompt = given.get("prompt")
    d = Directives.parse(prompt)
    latency = d.slow if d.slow is not None else cfg.latency_seconds
    if d.slow is None and cfg.latency_jitter:
        latency += latency_rng.uniform(-cfg.latency_jitter, cfg.latency_jitter)
    latency = max(0.0, latency)
    if d.abort:
        return Plan(latency, "aborted")
    if d.nsfw:
        return Plan(
            latency,
            "failed",
            "NSFW content detected. Try running it again, or try a different prompt.",
        )
    if d.fail:
        return Plan(
            latency, "failed", "Prediction failed: the model crashed (fake [fail] directive)"
        )
    if schema.model.startswith("recraft-ai/") and isinstance(prompt, str) and len(prompt) > 1000:
        return Plan(
            latency, "failed", "Prompt is too long: Recraft V3 accepts at most 1000 characters"
        )
    if cfg.fail_rate and rng.random() < cfg.fail_rate:
        return Plan(latency, "failed", cfg.fail_error)
    return Plan(latency, "succeeded")


@dataclass(eq=False)
class Prediction:
    id: str
    schema: ModelSchema
    input: dict[str, Any]
    spec: OutputSpec
    plan: Plan
    created: float
    deadline: float | None = None
    webhook: str | None = None
    events: frozenset[str] = DEFAULT_EVENTS
    status: str = "starting"
    started: float | None = None
    completed: float | None = None
    output: Any = None
    logs: str = ""
    error: str | None = None
    data_removed: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # output present or terminal
    task: asyncio.Task[None] | None = None
    webhook_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    gets: int = 0  # GET /v1/predictions/{id} answered for this prediction
    cancels: int = 0  # POST .../cancel answered for this prediction
    webhooks: int = 0  # webhook deliveries scheduled (one per event sent)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def prompt(self) -> str:
        prompt = self.schema.with_defaults(self.input).get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def file_names(self) -> list[str]:
        return [f"out-{n}.{self.spec.fmt}" for n in range(self.spec.count)]

    def file_urls(self, public_url: str) -> list[str]:
        return [f"{public_url}/files/{self.id}/{name}" for name in self.file_names()]

    def to_json(self, public_url: str) -> dict[str, Any]:
        base = f"{public_url}/v1/predictions/{self.id}"
        metrics: dict[str, float] = {}
        if self.completed is not None:
            if self.started is not None:
                metrics["predict_time"] = round(self.completed - self.started, 6)
            metrics["total_time"] = round(self.completed - self.created, 6)
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.schema.model,
            "version": self.schema.version_id,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "data_removed": self.data_removed,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": iso(self.created),
            "started_at": iso(self.started),
            "completed_at": iso(self.completed),
            "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"{public_url}/p/{self.id}"},
            "metrics": metrics,
        }
        if self.deadline is not None:
            body["deadline"] = iso(self.deadline)
        return body

    def record(self) -> dict[str, Any]:
        """What the control API's ``/_fake/predictions`` shows: the lifecycle as the API
        reports it, the planned latency and the requests made about this prediction."""
        metrics = self.to_json("")["metrics"]
        return {
            "id": self.id,
            "model": self.schema.model,
            "prompt": self.prompt,
            "status": self.status,
            "created_at": iso(self.created),
            "started_at": iso(self.started),
            "completed_at": iso(self.completed),
            "predict_time": metrics.get("predict_time"),
            "total_time": metrics.get("total_time"),
            "planned_latency": round(self.plan.latency, 6),
            "gets": self.gets,
            "cancels": self.cancels,
            "webhooks": self.webhooks,
        }


class PredictionStore:
    """The fake's memory of predictions: ordered by creation, bounded, expiring."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Prediction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, pred: Prediction) -> None:
        self._items[pred.id] = pred

    def get(self, pred_id: str) -> Prediction | None:
        return self._items.get(pred_id)

    def values(self) -> list[Prediction]:
        return list(self._items.values())

    def clear(self) -> list[Prediction]:
        items = self.values()
        self._items.clear()
        return items

    def expire(self, pred: Prediction, cfg: FakeConfig, now: float) -> None:
        """Remove output, input and logs once the files' lifetime is over."""
        if pred.data_removed or pred.completed is None:
            return
        if now - pred.completed >= cfg.file_ttl_seconds:
            pred.data_removed = True
            pred.output = None
            pred.input = {}
            pred.logs = ""

    def sweep(self, cfg: FakeConfig, now: float) -> list[Prediction]:
        """Forget old predictions; returns the ones removed."""
        removed: list[Prediction] = []
        for pred in self.values():
            self.expire(pred, cfg, now)
            if pred.terminal and now - pred.created >= cfg.prediction_ttl_seconds:
                removed.append(self._items.pop(pred.id))
        excess = len(self._items) - cfg.max_predictions
        for pred in self.values():
            if excess <= 0:
                break
            if pred.terminal:
                removed.append(self._items.pop(pred.id))
                excess -= 1
        return removed


async def sleep_until(pred: Prediction, when: float) -> bool:
    """Sleep until wall time ``when``; False (after sleeping to it) if the deadline comes first."""
    if pred.deadline is not None and pred.deadline < when:
        await asyncio.sleep(max(0.0, pred.deadline - time.time()))
        return False
    await asyncio.sleep(max(0.0, when - time.time()))
    return True


def cancel_task(pred: Prediction) -> None:
    task = pred.task
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()


async def drain(tasks: set[asyncio.Task[Any]]) -> None:
    for task in list(tasks):
        task.cancel()
    for task in list(tasks):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
