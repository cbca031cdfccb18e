"""5. Worker resources over many jobs: RSS and CPU time per job, and whether RSS grows.

One worker (default settings: 3 threads, Realtime on) works a pre-filled queue of
generations through the full pipeline, so N jobs = N/2 generate-image + N/2 download-image:
create the prediction at the fake Replicate (latency 0), enqueue the download, fetch the
output over HTTP, sniff it, upload it to Storage, write the images row, complete. The
fake renders 256 px WebP outputs (its default is up to 1024 px) so that the shared stack
server keeps up; the worker does the same calls per job either way, with smaller bodies.

Every ~2 s: VmRSS from /proc/<pid>/status, utime + stime from /proc/<pid>/stat, and the
number of completed jobs from the database.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from bench.common import Result, Sizes, Table, ratio
from bench.cpu import process_cpu, rss_mib
from bench.drive import integrity
from bench.harness import DEFAULT_POLL_INTERVAL, BenchEnv, bulk_generations, running

NAME = "resources"
TITLE = "Worker resources: RSS and CPU per job"
SAMPLE_EVERY = 2.0
RENDER_SIDE = 256
RSS_GOAL_MIB = 120.0  # issue 15: flat, under 120 MB after 10,000 jobs


@dataclass(frozen=True)
class Sample:
    t: float
    jobs: int
    rss_mib: float
    cpu_s: float


def _completed(env: BenchEnv) -> int:
    row = env.admin.execute(
        "select count(*) from public.job_queue where status = 'completed'").fetchone()
    return int(row[0]) if row else 0


def _slope(samples: list[Sample]) -> float:
    """Least-squares MiB per 1,000 jobs."""
    if len(samples) < 2:
        return math.nan
    xs = [s.jobs / 1000.0 for s in samples]
    ys = [s.rss_mib for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else math.nan


def _at(samples: list[Sample], jobs: int) -> Sample | None:
    return next((s for s in samples if s.jobs >= jobs), None)


def run(env: BenchEnv, sizes: Sizes) -> Result:
    total = sizes.resource_jobs
    env.clear()
    env.configure_fake(0.0, max_render_side=RENDER_SIDE)
    gids = bulk_generations(env, total // 2, env.users(8))
    samples: list[Sample] = []
    worker = env.worker(WORKER_POLL_INTERVAL=DEFAULT_POLL_INTERVAL)
    timeout = 300 + total * 0.5
    with running(worker) as w:
        assert w.proc is not None
        pid = w.proc.pid
        began = time.monotonic()
        while True:
            done = _completed(env)
            samples.append(Sample(time.monotonic() - began, done, rss_mib(pid),
                                  process_cpu(pid)))
            if done >= total or time.monotonic() - began > timeout:
                break
            time.sleep(SAMPLE_EVERY)
        startup_cpu = samples[0].cpu_s
    check = integrity(env, gids)
    env.clear()

    first, last = samples[0], samples[-1]
    jobs = last.jobs - first.jobs
    cpu_ms_per_job = ratio((last.cpu_s - first.cpu_s) * 1000.0, jobs)
    warm = [s for s in samples if s.jobs >= total // 10]
    marks = [0, total // 10, total // 2, total]
    table = Table(
        f"One worker, {total:,} jobs ({total // 2:,} generations x generate + download), "
        f"fake latency 0, {RENDER_SIDE} px outputs",
        ["after jobs", "RSS MiB", "CPU s (cumulative)", "elapsed s"],
    )
    for mark in marks:
        s = _at(samples, mark) if mark else first
        if s is not None:
            table.add(f"{mark:,}" if mark else "start (ready)", s.rss_mib, s.cpu_s, s.t)
    summary_table = Table("Per job", ["metric", "value"])
    summary_table.add("CPU ms per job (utime + stime)", cpu_ms_per_job)
    summary_table.add(f"RSS slope after {total // 10:,} jobs, MiB per 1k jobs", _slope(warm))
    summary_table.add("RSS slope over the whole run, MiB per 1k jobs", _slope(samples))
    summary_table.add("RSS growth start -> end, MiB", last.rss_mib - first.rss_mib)
    summary_table.add(f"RSS after {last.jobs:,} jobs, MiB (goal < {RSS_GOAL_MIB:g})", last.rss_mib)
    summary_table.add("jobs/s (this worker, 3 threads)", ratio(jobs, last.t - first.t))
    summary_table.add("CPU s at ready (start-up)", startup_cpu)
    summary_table.add("every job completed once, one image per generation", bool(check["ok"]))
    summary_table.notes += [
        f"Sampled every {SAMPLE_EVERY:g} s ({len(samples)} samples); slope = least squares "
        "of RSS over completed jobs.",
        "CPU per job is the worker process only; the stack server, the fake and Postgres "
        "are not counted.",
    ]
    data: dict[str, Any] = {
        "jobs": total, "render_side": RENDER_SIDE, "cpu_ms_per_job": cpu_ms_per_job,
        "rss_slope_mib_per_1k_after_warmup": _slope(warm),
        "rss_slope_mib_per_1k": _slope(samples), "integrity": check,
        "rss_end_mib": last.rss_mib, "rss_goal_mib": RSS_GOAL_MIB,
        "samples": [s.__dict__ for s in samples],
    }
    return Result(NAME, TITLE, [table, summary_table], data)
