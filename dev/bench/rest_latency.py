"""RPC round-trip latency through supabase-py against the local stack's /rest/v1.

    .venv/bin/python dev/bench/rest_latency.py                 # throwaway stack in a temp dir
    .venv/bin/python dev/bench/rest_latency.py --root .stack   # an existing stack (or up + down)

One sync supabase-py client (service_role) calls each RPC ``--calls`` times in a row after a
warm-up; prints a table (median, p99, mean in ms) and the same numbers as one JSON line.
The calls have no side effect on an idle queue: ``requeue_stale_jobs()`` (scalar) and
``heartbeat_job`` on an unknown job id (set-returning, no row).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supabase import Client, create_client

from devstack.stack import Stack


def _quantile(sorted_ms: list[float], q: float) -> float:
    index = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[index]


def measure(call: Callable[[], Any], calls: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples: list[float] = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000.0)
    samples.sort()
    return {
        "calls": calls,
        "median_ms": round(statistics.median(samples), 3),
        "p99_ms": round(_quantile(samples, 0.99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "max_ms": round(samples[-1], 3),
    }


def run(client: Client, calls: int, warmup: int) -> dict[str, dict[str, float]]:
    unknown_job = str(uuid.uuid4())
    cases: dict[str, Callable[[], Any]] = {
        "rpc scalar requeue_stale_jobs()": lambda: client.rpc("requeue_stale_jobs", {}).execute(),
        "rpc setof heartbeat_job(...)": lambda: client.rpc(
            "heartbeat_job", {"p_job_id": unknown_job, "p_worker_id": "bench"}
        ).execute(),
    }
    return {name: measure(call, calls, warmup) for name, call in cases.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an existing stack folder (default: temporary)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)

    temp: tempfile.TemporaryDirectory[str] | None = None
    if args.root is None:
        temp = tempfile.TemporaryDirectory(prefix="rest-bench-")
        stack = Stack(Path(temp.name) / "stack", fast=True)
    else:
        stack = Stack(args.root)
    started = args.root is None or not stack.server_running()
    try:
        state = stack.up() if started else stack.state()
        client = create_client(state.url, state.keys.service_role_key)
        results = run(client, args.calls, args.warmup)
    finally:
        if started:
            stack.down()  # leave nothing running that this script started
        if temp is not None:
            temp.cleanup()
    print(f"{'case':36} {'calls':>6} {'median ms':>10} {'p99 ms':>8} {'mean ms':>8}")
    for name, r in results.items():
        print(
            f"{name:36} {r['calls']:>6} {r['median_ms']:>10.2f} {r['p99_ms']:>8.2f} "
            f"{r['mean_ms']:>8.2f}"
        )
    print(json.dumps({"rest_rpc_latency": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
