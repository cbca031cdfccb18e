"""2. End-to-end overhead of the two-job pipeline (generate-image + download-image).

Overhead = (image_generations.completed_at - created_at) - L, where L is the fake
Replicate's prediction time (1 s): what the scheduler, the queue round trips, the
download and the storage upload add to the model's own time. The daemon (Realtime) and the
seed's pg_cron model (time-scaled 1/60, as in the pickup benchmark) take the same arrivals,
one every 1.3 s (no backlog in either model). In the scaled seed run L = 1 s stands for a 60 s model (the seed's "quality
models" take 30-60 s), so its unscaled overhead is the measured one x 60.
"""

from __future__ import annotations

from bench.common import Result, Sizes, Table, ms, ratio, summary
from bench.harness import BenchEnv, Submitter
from bench.scenario import POLLING, REALTIME, SCALE, SEED, ModeRun, run_mode

NAME = "e2e"
TITLE = "End-to-end overhead (created -> completed, minus the provider's latency)"
LATENCY = 1.0


def run(env: BenchEnv, sizes: Sizes) -> Result:
    submitter = Submitter(env)
    try:
        runs = [run_mode(env, submitter, mode, count=sizes.e2e_generations,
                         spacing=sizes.e2e_spacing, latency=LATENCY)
                for mode in (REALTIME, POLLING, SEED)]
    finally:
        submitter.close()

    table = Table(
        f"Created -> completed minus L = {LATENCY:g} s, {sizes.e2e_generations} generations per "
        f"model, one arrival every {sizes.e2e_spacing:g} s",
        ["model", "n", "median ms", "p95 ms", "p99 ms", "completed", "integrity ok"],
    )
    overhead: dict[str, dict[str, float]] = {}
    for r in runs:
        s = summary([t - LATENCY for t in r.totals()])
        overhead[r.mode.key] = s
        table.add(r.mode.label + (" [scaled 1/60]" if r.mode.scaled else ""), s["n"],
                  ms(s["median"]), ms(s["p95"]), ms(s["p99"]),
                  r.integrity["completed"], bool(r.integrity["ok"]))
    seed = overhead["seed"]
    table.add(f"seed UNSCALED (measured x {SCALE:g}, L = 60 s)", seed["n"],
              ms(seed["median"] * SCALE), ms(seed["p95"] * SCALE), ms(seed["p99"] * SCALE),
              None, None)
    table.notes += [
        "Two jobs per generation: the seed waits for a tick twice (generate, then download).",
        "completed_at is written by the worker (same host clock as the database here).",
    ]
    parts = Table("Where the overhead goes: medians per job, ms (measured, not unscaled)",
                  ["model", "generate pickup", "generate run - L", "download pickup",
                   "download run"])
    for r in runs:
        def med(job_type: str, key: str, minus: float = 0.0, run: ModeRun = r) -> float:
            values = [j[key] - minus for j in run.jobs
                      if j["job_type"] == job_type and j[key] is not None]
            return ms(summary(values)["median"])

        parts.add(r.mode.label, med("generate-image", "pickup"),
                  med("generate-image", "run", LATENCY), med("download-image", "pickup"),
                  med("download-image", "run"))
    parts.notes += [
        "generate run - L includes the wait for Replicate: the worker holds the create call "
        "open up to WORKER_REPLICATE_WAIT (default 1 s, Prefer: wait) and then polls the "
        "prediction every 1 s, so a model that outlasts the wait is seen up to 1 s late.",
    ]
    ratios = Table("Ratio seed model (unscaled) / ours, end-to-end overhead",
                   ["ours", "median x", "p99 x"])
    for key in ("realtime", "polling"):
        ratios.add(next(r.mode.label for r in runs if r.mode.key == key),
                   ratio(seed["median"] * SCALE, overhead[key]["median"]),
                   ratio(seed["p99"] * SCALE, overhead[key]["p99"]))
    return Result(NAME, TITLE, [table, parts, ratios], {
        "provider_latency_s": LATENCY,
        "arrival_spacing_s": sizes.e2e_spacing,
        "overhead_s": overhead,
        "runs": [r.as_json() for r in runs],
    })
