"""The fake's state and behaviour behind the HTTP layer: config, stats, predictions, files."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections import OrderedDict
from typing import Any

from devstack.fake_replicate import images
from devstack.fake_replicate.config import FakeConfig, Stats
from devstack.fake_replicate.predictions import (
    DEFAULT_EVENTS,
    Prediction,
    PredictionStore,
    cancel_task,
    drain,
    make_plan,
    new_prediction_id,
    sleep_until,
)
from devstack.fake_replicate.schemas import ModelSchema
from devstack.fake_replicate.webhooks import WebhookSender

log = logging.getLogger("devstack.fake_replicate")

FILE_CACHE_BYTES = 64 * 1024 * 1024
SWEEP_INTERVAL = 10.0


class Engine:
    def __init__(self, public_url: str, config: FakeConfig | None = None) -> None:
        self.public_url = public_url.rstrip("/")
        self.default_secret = (config or FakeConfig()).webhook_secret
        self.config = config or FakeConfig(webhook_secret=self.default_secret)
        self.stats = Stats()
        self.rng = random.Random(self.config.random_seed)
        self.latency_rng = random.Random(self.config.random_seed)
        self.store = PredictionStore()
        self.sender = WebhookSender(lambda: self.config, lambda: self.stats, self.rng)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._files: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._file_bytes = 0
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifespan --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.sender.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for pred in self.store.values():
            cancel_task(pred)
        await drain(self._tasks)
        await self.sender.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    def sweep(self) -> None:
        removed = self.store.sweep(self.config, time.time())
        for pred in removed:
            cancel_task(pred)
            self._drop_files(pred.id)

    # -- control ----------------------------------------------------------------------------
    def update_config(self, patch: dict[str, Any]) -> FakeConfig:
        merged = {**self.config.model_dump(), **patch}
        self.config = FakeConfig.model_validate(merged)
        if "random_seed" in patch:
            self.rng.seed(self.config.random_seed)
            self.latency_rng.seed(self.config.random_seed)
        return self.config

    async def reset(self, *, forget_predictions: bool) -> None:
        self.config = FakeConfig(webhook_secret=self.default_secret)
        self.stats = Stats()
        self.rng.seed(None)
        self.latency_rng.seed(None)
        if forget_predictions:
            for pred in self.store.clear():
                cancel_task(pred)
            await drain(self._tasks)
            self._files.clear()
            self._file_bytes = 0

    # -- predictions -----------------------------------------------------------------------
    def create(
        self,
        schema: ModelSchema,
        given: dict[str, Any],
        *,
        webhook: str | None,
        events: list[str] | None,
        cancel_after: float | None,
    ) -> Prediction:
        now = time.time()
        pred = Prediction(
            id=new_prediction_id(),
            schema=schema,
            input=given,
            spec=images.output_spec(schema, given),
            plan=make_plan(schema, given, self.config, self.rng, self.latency_rng),
            created=now,
            deadline=now + cancel_after if cancel_after is not None else None,
            webhook=webhook,
            events=frozenset(events) if events is not None else DEFAULT_EVENTS,
        )
        self.store.add(pred)
        self.stats.predictions_created[schema.model] += 1
        pred.task = self._spawn(self._run(pred))
        if len(self.store) > self.config.max_predictions:
            self.sweep()
        return pred

    def get(self, pred_id: str) -> Prediction | None:
        pred = self.store.get(pred_id)
        if pred is not None:
            self.store.expire(pred, self.config, time.time())
        return pred

    def cancel(self, pred: Prediction) -> None:
        self.stats.cancels += 1
        if not pred.terminal:
            cancel_task(pred)
            self._finish(pred, "canceled")

    async def wait(self, pred: Prediction, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pred.settled.wait(), timeout)

    def body(self, pred: Prediction) -> dict[str, Any]:
        return pred.to_json(self.public_url)

    async def _run(self, pred: Prediction) -> None:
        cfg = self.config
        try:
            if not await sleep_until(pred, pred.created + cfg.queue_seconds):
                self._finish(pred, "aborted")
                return
            if pred.plan.outcome == "aborted":
                self._finish(pred, "aborted")
                return
            pred.status = "processing"
            pred.started = time.time()
            seed = pred.input.get("seed", self.rng.randrange(1, 2**31))
            spec = pred.spec
            pred.logs = (
                f"Using seed: {seed}\nGenerating {spec.count} image(s) of "
                f"{spec.width}x{spec.height} ({spec.fmt})\n"
            )
            self._emit(pred, "start")
            self._emit(pred, "logs")
            if not await sleep_until(pred, pred.started + pred.plan.latency):
                self._finish(pred, "canceled")
                return
            if pred.plan.outcome == "failed":
                pred.logs += f"Error: {pred.plan.error}\n"
                self._finish(pred, "failed", pred.plan.error)
                return
            await self._produce(pred)
            if cfg.finalize_seconds and not await sleep_until(
                pred, time.time() + cfg.finalize_seconds
            ):
                self._finish(pred, "canceled")
                return
            self._finish(pred, "succeeded")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("prediction %s crashed", pred.id)
            self._finish(pred, "failed", "Internal error in the fake Replicate")

    async def _produce(self, pred: Prediction) -> None:
        urls = pred.file_urls(self.public_url)
        if self.config.output_mode == "data":
            values = []
            ctype = images.CONTENT_TYPES[pred.spec.fmt]
            for name in pred.file_names():
                data = await self._render(pred, name)
                values.append(f"data:{ctype};base64,{base64.b64encode(data).decode()}")
        else:
            values = urls
        pred.output = values if pred.schema.output_is_list else values[0]
        elapsed = time.time() - (pred.started or pred.created)
        pred.logs += f"Generated {len(values)} image(s) in {elapsed:.2f}s\n"
        pred.settled.set()
        self._emit(pred, "output")
        self._emit(pred, "logs")

    def _finish(self, pred: Prediction, status: str, error: str | None = None) -> None:
        if pred.terminal:
            return
        pred.status = status
        pred.error = error
        pred.completed = time.time()
        if status != "succeeded":
            pred.output = None
        self.stats.outcomes[status] += 1
        pred.settled.set()
        self._emit(pred, "completed")

    def _emit(self, pred: Prediction, event: str) -> None:
        if pred.webhook is None or event not in pred.events:
            return
        pred.webhooks += 1
        body = json.dumps(self.body(pred)).encode()
        url = pred.webhook
        lock = pred.webhook_lock

        async def send() -> None:
            async with lock:
                await self.sender.deliver(url, body)

        self._spawn(send())

    # -- files -------------------------------------------------------------------------------
    def file_available(self, pred: Prediction, name: str) -> bool:
        self.store.expire(pred, self.config, time.time())
        return (
            not pred.data_removed
            and pred.output is not None
            and pred.status in ("processing", "succeeded")
            and name in pred.file_names()
        )

    async def file_bytes(self, pred: Prediction, name: str) -> bytes:
        return await self._render(pred, name)

    async def _render(self, pred: Prediction, name: str) -> bytes:
        key = (pred.id, name)
        cached = self._files.get(key)
        if cached is not None:
            self._files.move_to_end(key)
            return cached
        index = int(name.split("-", 1)[1].split(".", 1)[0])
        spec = pred.spec
        text = pred.prompt or "(empty prompt)"
        data = await asyncio.to_thread(
            images.render,
            text,
            spec.fmt,
            spec.width,
            spec.height,
            seed=f"{pred.id}:{index}",
            cap=self.config.max_render_side,
        )
        self._files[key] = data
        self._file_bytes += len(data)
        while self._file_bytes > FILE_CACHE_BYTES and self._files:
            _key, old = self._files.popitem(last=False)
            self._file_bytes -= len(old)
        return data

    def _drop_files(self, pred_id: str) -> None:
        for key in [k for k in self._files if k[0] == pred_id]:
            self._file_bytes -= len(self._files.pop(key))
