"""Load and clocks: spaced arrivals, the seed's cron tick, read-back of server timestamps."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness import BenchEnv, Submitter


def spaced_arrivals(submitter: Submitter, count: int, spacing: float, *,
                    tag: str = "bench") -> list[str]:
    """Submit ``count`` generations, one every ``spacing`` seconds. The arrival times are
    fixed in advance, so a slow request does not delay the next one."""
    start = time.monotonic() + 0.2
    futures: list[Future[str]] = []
    with ThreadPoolExecutor(8, thread_name_prefix="arrive") as pool:
        for i in range(count):
            delay = start + i * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(submitter.submit, f"{tag} {i}: a lighthouse at dawn"))
        return [f.result() for f in futures]


@dataclass
class Tick:
    fired: float
    seconds: float = 0.0
    processed: int = 0
    errors: int = 0
    status: int = 0


@dataclass
class CronTicker:
    """The seed's scheduler: pg_cron fires ``net.http_post`` to process-jobs every
    ``period`` seconds. pg_net is fire-and-forget, so a tick never waits for the previous
    call (calls may overlap, as they do in production when a job runs past the period)."""

    url: str
    token: str
    period: float
    ticks: list[Tick] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cron", daemon=True)
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="pg_net")
        self._http = httpx.Client(timeout=600)

    def start(self) -> CronTicker:
        self._thread.start()
        return self

    def call(self, tick: Tick) -> None:
        """One POST to process-jobs, recorded in ``tick``."""
        began = time.monotonic()
        try:
            response = self._http.post(self.url, headers={"Authorization": f"Bearer {self.token}"},
                                       json={})
            tick.status = response.status_code
            if response.status_code == 200:
                body = response.json()
                tick.processed = int(body.get("processed", 0))
                tick.errors = int(body.get("errors", 0))
        except httpx.HTTPError:
            tick.status = -1
        tick.seconds = time.monotonic() - began

    def _run(self) -> None:
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            tick = Tick(fired=time.monotonic() - start)
            self.ticks.append(tick)
            self._pool.submit(self.call, tick)
            k += 1
            self._stop.wait(max(0.0, start + k * self.period - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True)
        self._http.close()


# -- read-back (server timestamps) ------
JOBS_SQL = """
select j.job_type, j.status, j.attempt_number,
       extract(epoch from j.started_at - j.created_at)::float8 as pickup,
       extract(epoch from j.completed_at - j.started_at)::float8 as run,
       extract(epoch from j.created_at)::float8 as created,
       extract(epoch from j.started_at)::float8 as started,
       extract(epoch from j.completed_at)::float8 as completed,
       j.payload ->> 'generation_id' as generation_id, j.locked_by
from public.job_queue j
where j.payload ->> 'generation_id' = any(%s)
"""

GENERATIONS_SQL = """
select g.id::text, g.status, g.prompt, g.replicate_prediction_id,
       extract(epoch from g.completed_at - g.created_at)::float8 as total,
       extract(epoch from g.created_at)::float8 as created,
       extract(epoch from g.completed_at)::float8 as completed,
       (select count(*) from public.images i where i.generation_id = g.id) as images
from public.image_generations g
where g.id = any(%s::uuid[])
"""


def job_rows(env: BenchEnv, gids: list[str]) -> list[dict[str, Any]]:
    cur = env.admin.execute(JOBS_SQL, (gids,))
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def generation_rows(env: BenchEnv, gids: list[str]) -> list[dict[str, Any]]:
    cur = env.admin.execute(GENERATIONS_SQL, (gids,))
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class Stalled(RuntimeError):
    """Nothing moved for too long: a broken setup (e.g. code and schema out of step)."""


def wait_settled(env: BenchEnv, gids: list[str], timeout: float, stall: float = 60.0) -> int:
    """Wait until every generation is completed/failed/cancelled; returns how many are not.
    Raises ``Stalled`` when neither a generation nor one of their jobs finished for
    ``stall`` seconds."""
    deadline = time.monotonic() + timeout
    left = len(gids)
    progress = (-1, -1)
    moved = time.monotonic()
    while time.monotonic() < deadline:
        row = env.admin.execute(
            "select (select count(*) from public.image_generations where id = any(%s::uuid[])"
            "        and status not in ('completed', 'failed', 'cancelled')),"
            "       (select count(*) from public.job_queue where status = 'completed'"
            "        and payload ->> 'generation_id' = any(%s::text[]))", (gids, gids)).fetchone()
        left, jobs_done = (int(row[0]), int(row[1])) if row else (len(gids), 0)
        if left == 0:
            return 0
        if (left, jobs_done) != progress:
            progress, moved = (left, jobs_done), time.monotonic()
        elif time.monotonic() - moved > stall:
            raise Stalled(f"no progress for {stall:.0f} s ({left} of {len(gids)} generations "
                          f"unfinished); see the worker logs in {env.log_dir}")
        time.sleep(0.25)
    return left


def integrity(env: BenchEnv, gids: list[str],
              job_types: tuple[str, ...] = ("download-image", "generate-image")
              ) -> dict[str, Any]:
    """Every generation completed once: one job of each of ``job_types`` (webhook mode adds
    process-webhook), each completed at attempt 1, and one image."""
    jobs = job_rows(env, gids)
    gens = generation_rows(env, gids)
    per_gen: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        per_gen.setdefault(job["generation_id"], []).append(job)
    bad_jobs = [j for j in jobs if j["status"] != "completed" or j["attempt_number"] != 1]
    wrong_count = [g for g in gids if sorted(j["job_type"] for j in per_gen.get(g, []))
                   != sorted(job_types)]
    return {
        "generations": len(gids),
        "completed": sum(1 for g in gens if g["status"] == "completed"),
        "jobs": len(jobs),
        "jobs_not_completed_once": len(bad_jobs),
        "generations_without_exactly_two_jobs": len(wrong_count),
        "generations_without_exactly_one_image": sum(1 for g in gens if g["images"] != 1),
        "lost": len(gids) - len(gens),
        "ok": not bad_jobs and not wrong_count and len(gens) == len(gids)
        and all(g["images"] == 1 and g["status"] == "completed" for g in gens),
    }
