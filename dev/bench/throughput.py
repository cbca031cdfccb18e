"""3. Throughput efficiency: N worker processes x C = 3 threads, provider latency L = 1 s.

The N workers start first and subscribe; then one transaction creates the whole batch
(N x C/L x the run's seconds generations, via create_generation, start-generation's SQL),
so every worker sees the burst at once. Ideal generate-image rate: N x C / L jobs/s. Each
thread also runs the downloads (priority 1), so a generation costs a thread
L + the download + queue round trips: the ceiling is below C/L by construction.

Rates: makespan (first claim -> last completion) and steady (the 10 %-90 % window of
completions). Afterwards: every job completed exactly once (attempt_number = 1, one
job.completed log line per job across all workers), one images row per generation.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from bench.common import Result, Sizes, Table, percentile, ratio, summary
from bench.drive import integrity, job_rows, proc_cpu_seconds, wait_settled
from bench.harness import DEFAULT_CONCURRENCY, BenchEnv, bulk_generations, running_all

NAME = "throughput"
TITLE = "Throughput efficiency (N workers x C threads, L = 1 s)"
LATENCY = 1.0
WORKER_COUNTS = (1, 2, 4)

TIMES_SQL = """
select extract(epoch from min(j.started_at))::float8,
       extract(epoch from max(j.completed_at))::float8,
       array_agg(extract(epoch from j.completed_at)::float8 order by j.completed_at)
from public.job_queue j where j.job_type = %s and j.payload ->> 'generation_id' = any(%s)
"""

GEN_TIMES_SQL = """
select array_agg(extract(epoch from g.completed_at)::float8 order by g.completed_at)
from public.image_generations g where g.id = any(%s::uuid[])
"""


def _rates(first: float, last: float, stamps: list[float]) -> tuple[float, float]:
    """(makespan rate, steady rate over the 10-90 % completions)."""
    n = len(stamps)
    makespan = n / (last - first) if last > first else math.nan
    lo, hi = percentile(stamps, 10), percentile(stamps, 90)
    steady = 0.8 * n / (hi - lo) if hi > lo else math.nan
    return makespan, steady


def _one(env: BenchEnv, workers: int, count: int) -> dict[str, Any]:
    env.clear()
    env.fake.reset()
    env.fake.configure(latency_seconds=LATENCY, queue_seconds=0.0)
    users = env.users(8)
    procs = [env.worker(WORKER_CONCURRENCY=DEFAULT_CONCURRENCY) for _ in range(workers)]
    with running_all(procs, subscribed=True):
        pids = [p.proc.pid for p in procs if p.proc is not None]
        cpu_before = [proc_cpu_seconds(env.server_pid()), *map(proc_cpu_seconds, pids)]
        began = time.monotonic()
        gids = bulk_generations(env, count, users)
        unsettled = wait_settled(env, gids, 120 + count * 2.0 / workers)
        wall = time.monotonic() - began
        cpu_after = [proc_cpu_seconds(env.server_pid()), *map(proc_cpu_seconds, pids)]
    server_cpu = (cpu_after[0] - cpu_before[0]) / wall
    workers_cpu = sum(a - b for a, b in zip(cpu_after[1:], cpu_before[1:], strict=True)) / wall
    completed_ids = [e.get("job_id") for p in procs for e in p.actions("job.completed")]
    first, last_gen_job, gen_stamps = env.admin.execute(TIMES_SQL, ("generate-image", gids)
                                                        ).fetchone() or (0, 0, [])
    gen_done = (env.admin.execute(GEN_TIMES_SQL, (gids,)).fetchone() or [[]])[0] or []
    gen_done = [t for t in gen_done if t is not None]
    jobs_makespan, jobs_steady = _rates(first, last_gen_job, gen_stamps or [])
    gens_makespan, gens_steady = _rates(first, max(gen_done, default=first), gen_done)
    runs = job_rows(env, gids)
    run_s = {t: summary([j["run"] for j in runs if j["job_type"] == t and j["run"] is not None])
             for t in ("generate-image", "download-image")}
    check = integrity(env, gids)
    check["job_completed_log_lines"] = len(completed_ids)
    check["distinct_jobs_in_logs"] = len(set(completed_ids))
    check["duplicates_in_logs"] = len(completed_ids) - len(set(completed_ids))
    check["ok"] = bool(check["ok"]) and len(completed_ids) == len(set(completed_ids)) == \
        check["jobs"] == 2 * count
    ideal = workers * DEFAULT_CONCURRENCY / LATENCY
    share = [len(p.actions("job.completed")) for p in procs]
    load_1min = os.getloadavg()[0]
    env.clear()
    return {
        "workers": workers, "concurrency": DEFAULT_CONCURRENCY, "generations": count,
        "unsettled": unsettled, "ideal_generate_jobs_per_s": ideal,
        "generate_jobs_per_s": {"makespan": jobs_makespan, "steady": jobs_steady},
        "generations_per_s": {"makespan": gens_makespan, "steady": gens_steady},
        "efficiency_steady": ratio(jobs_steady, ideal),
        "efficiency_makespan": ratio(jobs_makespan, ideal),
        "jobs_per_worker": share, "integrity": check, "load_average_1min_after": load_1min,
        "cpu_cores_busy": {"stack_server": server_cpu, "workers": workers_cpu},
        "job_run_s": run_s,
    }


def run(env: BenchEnv, sizes: Sizes) -> Result:
    runs = []
    for n in WORKER_COUNTS:
        count = max(6, round(n * DEFAULT_CONCURRENCY / LATENCY * sizes.throughput_seconds))
        runs.append(_one(env, n, count))
    table = Table(
        f"Throughput, C = {DEFAULT_CONCURRENCY} threads per worker, L = {LATENCY:g} s, "
        "burst of N x C/L x "
        f"{sizes.throughput_seconds:g} s generations",
        ["workers", "generations", "ideal gen-jobs/s", "gen-jobs/s steady", "gen-jobs/s makespan",
         "generations/s steady", "efficiency (steady)", "gen run mean s", "dl run mean s",
         "jobs per worker", "dup/lost", "server CPU", "workers CPU", "load 1 min"],
    )
    for r in runs:
        c = r["integrity"]
        table.add(r["workers"], r["generations"], r["ideal_generate_jobs_per_s"],
                  r["generate_jobs_per_s"]["steady"], r["generate_jobs_per_s"]["makespan"],
                  r["generations_per_s"]["steady"], r["efficiency_steady"],
                  r["job_run_s"]["generate-image"]["mean"], r["job_run_s"]["download-image"]["mean"],
                  "/".join(str(x) for x in r["jobs_per_worker"]),
                  f"{c['duplicates_in_logs'] + c['jobs_not_completed_once']}/{c['lost']}"
                  + (" ok" if c["ok"] else " FAILED"), r["cpu_cores_busy"]["stack_server"],
                  r["cpu_cores_busy"]["workers"], r["load_average_1min_after"])
    table.notes += [
        "efficiency = measured generate-image jobs/s / (N x C / L); the same threads also run "
        "every download (priority 1), so 1.0 is out of reach by design: a generation holds a "
        "thread for gen run + dl run (the means shown), so C / (gen + dl) is the real ceiling.",
        "gen run > L: the worker holds the create call open for WORKER_REPLICATE_WAIT = 1 s "
        "(Prefer: wait) and then polls every 1 s, so a 1 s prediction that misses the wait "
        "is collected ~1 s later.",
        "dup/lost: jobs completed more than once or not at attempt 1 / generations missing; "
        "checked in the rows (status, attempt_number, one images row) and in the workers' "
        "job.completed log lines.",
        "All workers, the stack server (REST, Realtime, Storage, fake Replicate) and Postgres "
        "share this machine's CPUs. server CPU / workers CPU = cores kept busy during the run "
        "(CPU seconds / wall seconds; 1.0 = one core; the stack server is one Python process, "
        "so near 1.0 it is the bottleneck, not the workers). load 1 min = the 1-minute load "
        "average right after the run (other users' processes included).",
    ]
    return Result(NAME, TITLE, [table], {"provider_latency_s": LATENCY, "runs": runs})
