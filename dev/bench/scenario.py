"""One scheduling model under spaced arrivals: the daemon (Realtime or polling only,
provider polling or webhooks) or the seed's pg_cron -> process-jobs loop, time-scaled.

Arrivals come at a fixed spacing through start-generation; latencies are read back from
the rows afterwards, as differences of server timestamps (job_queue.started_at -
created_at, image_generations.completed_at - created_at), and from the fake Replicate's
record of each prediction (its own created_at / completed_at, the requests made about it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import summary
from bench.drive import (
    CronTicker,
    Tick,
    generation_rows,
    integrity,
    job_rows,
    spaced_arrivals,
    wait_settled,
)
from bench.harness import (
    DEFAULT_CONCURRENCY,
    DEFAULT_POLL_INTERVAL,
    BenchEnv,
    Submitter,
    running,
)

SEED_PERIOD = 60.0  # pg_cron: once a minute
SEED_BATCH = 3  # process-jobs claims up to 3 jobs per call
SCALE = 60.0  # the seed's clock runs 60x faster here: one tick per second


@dataclass(frozen=True)
class Mode:
    """How jobs are scheduled: the seed's cron (``scaled``), or the daemon with Realtime on or
    off, polling Replicate or told by webhooks, plus any further worker settings."""

    key: str
    label: str
    scaled: bool = False
    realtime: bool = True
    webhook: bool = False
    extra_env: tuple[tuple[str, str], ...] = ()

    @property
    def factor(self) -> float:
        """Multiply measured wait times by this to get the unscaled (production) figure."""
        return SCALE if self.scaled else 1.0

    def worker_env(self, env: BenchEnv, concurrency: int) -> dict[str, str]:
        out = {"WORKER_POLL_INTERVAL": f"{DEFAULT_POLL_INTERVAL:g}",
               "WORKER_REALTIME": "true" if self.realtime else "false",
               "WORKER_CONCURRENCY": str(concurrency)}
        if self.webhook:
            out["WORKER_WEBHOOK_URL"] = f"{env.state.url}/functions/v1/replicate-webhook"
            out["REPLICATE_WEBHOOK_SECRET"] = env.state.webhook_secret
        out.update(dict(self.extra_env))
        return out

    @property
    def job_types(self) -> tuple[str, ...]:
        """The jobs one generation makes."""
        base = ("download-image", "generate-image")
        return (*base, "process-webhook") if self.webhook else base

    def fake_config(self, env: BenchEnv) -> dict[str, Any]:
        return {"webhook_secret": env.state.webhook_secret} if self.webhook else {}


REALTIME = Mode("realtime", "daemon, Realtime + poll")
POLLING = Mode("polling", f"daemon, polling only ({DEFAULT_POLL_INTERVAL:g} s)", realtime=False)
SEED = Mode("seed", f"seed: process-jobs every {SEED_PERIOD / SCALE:g} s (60 s / {SCALE:g}), "
            f"{SEED_BATCH}/call", scaled=True)


@dataclass
class ModeRun:
    mode: Mode
    gids: list[str]
    jobs: list[dict[str, Any]]
    generations: list[dict[str, Any]]
    integrity: dict[str, Any]
    wall_seconds: float
    unsettled: int
    ticks: list[Tick] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)  # the fake's records
    fake_stats: dict[str, Any] = field(default_factory=dict)  # the fake's request counters

    def pickups(self, job_type: str | None = None) -> list[float]:
        """Enqueue -> claim of first attempts (a retried job's started_at is its last claim)."""
        return [j["pickup"] for j in self.jobs
                if j["pickup"] is not None and j["attempt_number"] == 1
                and (job_type is None or j["job_type"] == job_type)]

    def totals(self) -> list[float]:
        return [g["total"] for g in self.generations
                if g["status"] == "completed" and g["total"] is not None]

    def tick_stats(self) -> dict[str, Any]:
        if not self.ticks:
            return {}
        calls = [t for t in self.ticks if t.status]
        return {
            "ticks": len(self.ticks),
            "calls_answered_200": sum(1 for t in calls if t.status == 200),
            "jobs_processed": sum(t.processed for t in calls),
            "errors_reported": sum(t.errors for t in calls),
            "full_ticks": sum(1 for t in calls if t.processed >= SEED_BATCH),
            "call_seconds": summary([t.seconds for t in calls]),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.key,
            "label": self.mode.label,
            "time_scale": self.mode.factor,
            "generations": len(self.gids),
            "wall_seconds": round(self.wall_seconds, 2),
            "unsettled": self.unsettled,
            "pickup_s": {
                "generate-image": summary(self.pickups("generate-image")),
                "download-image": summary(self.pickups("download-image")),
                "all": summary(self.pickups()),
            },
            "completed_minus_created_s": summary(self.totals()),
            "integrity": self.integrity,
            "cron": self.tick_stats(),
        }


def run_mode(env: BenchEnv, submitter: Submitter, mode: Mode, *, count: int, spacing: float,
             latency: float, concurrency: int = DEFAULT_CONCURRENCY,
             tag: str | None = None) -> ModeRun:
    """Arrivals under one scheduling model (the fake at ``latency`` +- jitter); the queue
    is emptied first, the rows stay for the caller to read until the next run."""
    env.clear()
    env.configure_fake(latency, **mode.fake_config(env))
    settle_timeout = 120.0 + count * (latency + 2.0)
    tag = tag or mode.key
    began = time.monotonic()
    ticks: list[Tick] = []
    if mode.scaled:
        server = env.functions()
        if server is None:
            raise RuntimeError("the seed model needs functions_compat (process-jobs)")
        cron = CronTicker(f"{server.base}/process-jobs", env.state.keys.anon_key,
                          SEED_PERIOD / SCALE)
        cron.call(Tick(fired=0.0))  # warm: the first call builds the worker runtime
        cron.start()
        try:
            gids = spaced_arrivals(submitter, count, spacing, tag=tag)
            unsettled = wait_settled(env, gids, settle_timeout)
        finally:
            cron.stop()
        ticks = cron.ticks
    else:
        worker = env.worker(**mode.worker_env(env, concurrency))
        with running(worker, subscribed=mode.realtime):
            time.sleep(1.0)  # past the poll that follows start/subscribe
            gids = spaced_arrivals(submitter, count, spacing, tag=tag)
            unsettled = wait_settled(env, gids, settle_timeout)
    wall = time.monotonic() - began
    return ModeRun(mode, gids, job_rows(env, gids), generation_rows(env, gids),
                   integrity(env, gids, mode.job_types), wall, unsettled, ticks,
                   env.fake_predictions(), dict(env.fake.stats()))
