"""3. Calls to Supabase per generation, counted at a recording proxy (``bench.supaproxy``).

The workers reach the stack only through the proxy (their SUPABASE_URL); the app's own
calls (start-generation and what it does) do not pass through it. Two setups take the same
arrivals (one generation every ``SPACING`` s, the fake at L = 1.3 s +- 20 %):

- 1 worker;
- ``sizes.calls_idle_workers`` workers (8 in the full run), all idle between generations:
  every Realtime INSERT reaches each of them.

Each setup: start the workers, let their start-up calls pass, then count an **idle window**
(``sizes.calls_idle_seconds``, no jobs: poll timers, registry heartbeats, requeue) and then
the **load** (the arrivals until every generation is completed). Steady-state calls per
generation = (load calls - idle rate x load seconds) / generations, per kind. Storage
uploads and heartbeats (heartbeat_job, register_worker) are reported apart from the rest;
Realtime is not counted. Empty claims per job = claim calls that answered no job, per job.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.common import Result, Sizes, Table, ratio
from bench.drive import integrity, spaced_arrivals, wait_settled
from bench.harness import BenchEnv, Submitter, running_all
from bench.supaproxy import Call, RecordingProxy

NAME = "calls"
TITLE = "Calls to Supabase per generation"
LATENCY = 1.3
SPACING = 1.0
SETTLE = 3.0  # seconds after start-up before the idle window (start-up calls excluded)
HEARTBEATS = ("rpc heartbeat_job", "rpc register_worker")


def group(kind: str) -> str:
    if kind.startswith("storage "):
        return "storage"
    if kind in HEARTBEATS:
        return "heartbeats"
    return "generation"


def _count(calls: list[Call], start: float, end: float) -> Counter[str]:
    return Counter(c.kind for c in calls if start <= c.at < end)


def measure(env: BenchEnv, submitter: Submitter, workers: int, sizes: Sizes) -> dict[str, Any]:
    env.clear()
    env.configure_fake(LATENCY)
    proxy = RecordingProxy(env.state.url).start()
    try:
        procs = [env.worker(SUPABASE_URL=proxy.url) for _ in range(workers)]
        with running_all(procs, subscribed=True):
            time.sleep(min(SETTLE, sizes.calls_idle_seconds))
            idle_start = time.monotonic()
            time.sleep(sizes.calls_idle_seconds)
            load_start = time.monotonic()
            gids = spaced_arrivals(submitter, sizes.calls_generations, SPACING,
                                   tag=f"calls x{workers}")
            unsettled = wait_settled(env, gids, 120 + sizes.calls_generations * 5)
            load_end = time.monotonic()
        calls = proxy.snapshot()
        websockets = proxy.websockets
    finally:
        proxy.stop()
    check = integrity(env, gids)
    env.clear()
    idle_s, load_s = load_start - idle_start, load_end - load_start
    idle, load = _count(calls, idle_start, load_start), _count(calls, load_start, load_end)
    count = len(gids)
    kinds = sorted(set(idle) | set(load), key=lambda k: (group(k), -load[k], k))
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        rate = idle[kind] / idle_s if idle_s > 0 else 0.0
        rows.append({"kind": kind, "group": group(kind), "idle": idle[kind],
                     "idle_per_min": rate * 60, "load": load[kind],
                     "per_generation_raw": load[kind] / count,
                     "per_generation_steady": (load[kind] - rate * load_s) / count})
    totals = {g: {"raw": sum(r["per_generation_raw"] for r in rows if r["group"] == g),
                  "steady": sum(r["per_generation_steady"] for r in rows if r["group"] == g)}
              for g in ("generation", "storage", "heartbeats")}
    empty = [r for r in rows if r["kind"].endswith("(empty)")]
    claimed = sum(c.jobs for c in calls if load_start <= c.at < load_end)
    return {
        "workers": workers, "generations": count, "jobs": 2 * count, "unsettled": unsettled,
        "idle_seconds": idle_s, "load_seconds": load_s, "kinds": rows, "totals": totals,
        "empty_claims_per_job_raw": ratio(sum(r["load"] for r in empty), 2 * count),
        "empty_claims_per_job_steady": ratio(
            sum(r["per_generation_steady"] for r in empty) * count, 2 * count),
        "jobs_claimed_in_load_window": claimed, "realtime_connections": websockets,
        "integrity": check,
    }


def _tables(sizes: Sizes, setups: list[dict[str, Any]]) -> list[Table]:
    totals = Table(
        f"HTTP calls to Supabase per generation, {sizes.calls_generations} generations one "
        f"every {SPACING:g} s, L = {LATENCY:g} s +-20 %, steady state (idle polling "
        "subtracted) and raw",
        ["workers", "per generation (steady)", "raw", "storage", "heartbeats (steady)",
         "empty claims per job (steady)", "raw", "idle s", "load s", "integrity ok"],
    )
    for s in setups:
        t = s["totals"]
        totals.add(s["workers"], t["generation"]["steady"], t["generation"]["raw"],
                   t["storage"]["steady"], t["heartbeats"]["steady"],
                   s["empty_claims_per_job_steady"], s["empty_claims_per_job_raw"],
                   s["idle_seconds"], s["load_seconds"], bool(s["integrity"]["ok"]))
    totals.notes += [
        "per generation excludes Storage and heartbeats (rpc heartbeat_job, rpc "
        "register_worker), shown apart; Realtime is not counted. Goal of issue 15: <= 6 with "
        "one worker and <= 8 with 8 idle workers; empty claims per job with 8 idle workers "
        "<= 1.",
        "steady = (calls during the load - the idle window's rate x the load's length) / "
        "generations; raw = calls during the load / generations. The app's own calls "
        "(start-generation) are not counted.",
    ]
    kinds = Table("Calls per generation by kind: steady, raw, and calls per minute in the "
                  "idle window", ["workers", "kind", "per generation", "raw", "idle per min"])
    for s in setups:
        for r in s["kinds"]:
            kinds.add(s["workers"], r["kind"], r["per_generation_steady"],
                      r["per_generation_raw"], r["idle_per_min"])
    return [totals, kinds]


def run(env: BenchEnv, sizes: Sizes) -> Result:
    submitter = Submitter(env)
    try:
        setups = [measure(env, submitter, n, sizes) for n in (1, sizes.calls_idle_workers)]
    finally:
        submitter.close()
    return Result(NAME, TITLE, _tables(sizes, setups), {
        "provider_latency_s": LATENCY, "jitter": env.jitter, "arrival_spacing_s": SPACING,
        "heartbeat_kinds": list(HEARTBEATS), "setups": setups,
    })
