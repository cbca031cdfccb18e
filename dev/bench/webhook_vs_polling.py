"""Throughput of ONE worker in webhook mode vs polling mode, same model latency, side by side.

    .venv/bin/python dev/bench/webhook_vs_polling.py                    # 30 x 5 s, concurrency 3
    .venv/bin/python dev/bench/webhook_vs_polling.py --count 60 --latency 10 --rounds 2
    .venv/bin/python dev/bench/webhook_vs_polling.py --root .stack      # an existing stack

One local stack (real PostgreSQL 15, the Supabase-compatible server with functions_compat
mounted, the fake Replicate) serves both modes. Each round runs the same batch once per
mode, the order alternating between rounds: reset the fake and set its latency, start ONE
``picture-worker run`` with WORKER_CONCURRENCY threads (webhook mode: WORKER_WEBHOOK_URL =
the stack's replicate-webhook function), submit the whole batch at once (the app's rows and
generate-image jobs through REST, as ``tests.support.Picture`` does), wait until every
generation is completed, stop the worker.

Per mode: makespan (first submit -> last generation completed), throughput, per-generation
latency (created_at -> completed_at; median, p95), the Replicate requests the worker made
(creates, GETs) and the webhook deliveries. The polling bound is count x latency /
concurrency (each generation holds a thread for the model's whole run). Prints a table, then
the same numbers as one JSON line (``--json FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]  # the repository
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from devstack.stack import Stack, StackState  # noqa: E402
from tests.support import Fake, Picture, WorkerProcess  # noqa: E402

MODES = ("polling", "webhook")
DONE = ("completed", "failed", "cancelled")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100.0
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@contextlib.contextmanager
def local_stack(root: Path | None) -> Iterator[StackState]:
    """The stack at ``root`` (started if needed, left running), else a throwaway one."""
    if root is not None:
        yield Stack(root).up()
        return
    tmp = Path(tempfile.mkdtemp(prefix="picture-webhook-bench-"))
    stack = Stack(tmp / "stack")
    try:
        yield stack.up()
    finally:
        stack.down()
        shutil.rmtree(tmp, ignore_errors=True)


class Bench:
    def __init__(self, state: StackState, log_dir: Path, args: argparse.Namespace) -> None:
        self.state = state
        self.log_dir = log_dir
        self.args = args
        self.fake = Fake(state)
        self.picture = Picture(state)
        self.admin = psycopg.connect(
            f"host=127.0.0.1 port={state.pg_port} user=supabase_admin dbname=postgres",
            autocommit=True,
        )
        self.user = self.picture.create_user()

    def close(self) -> None:
        self.admin.close()

    def worker_env(self, mode: str) -> dict[str, str]:
        env = {"WORKER_CONCURRENCY": str(self.args.concurrency), "WORKER_LOG_LEVEL": "INFO"}
        if mode == "webhook":
            env["WORKER_WEBHOOK_URL"] = f"{self.state.url}/functions/v1/replicate-webhook"
            env["REPLICATE_WEBHOOK_SECRET"] = self.state.webhook_secret
        return env

    def run_mode(self, mode: str, round_no: int) -> dict[str, Any]:
        args = self.args
        self.admin.execute("delete from public.job_queue where status in ('pending', 'processing')")
        self.fake.reset()
        self.fake.configure(latency_seconds=args.latency, webhook_secret=self.state.webhook_secret)
        worker = WorkerProcess(self.state, self.log_dir, **self.worker_env(mode)).start()
        try:
            worker.wait_ready(60)
            worker.wait_subscribed(60)
            began = time.monotonic()
            gids = [
                self.picture.submit(self.user, f"{mode} round {round_no} #{i}: a lighthouse")[0]
                for i in range(args.count)
            ]
            submitted = time.monotonic() - began
            self._wait(gids, began + args.timeout)
            makespan = time.monotonic() - began
        finally:
            worker.stop()
        return self._report(mode, round_no, gids, makespan, submitted)

    def _wait(self, gids: list[str], deadline: float) -> None:
        while True:
            row = self.admin.execute(
                "select count(*) filter (where status = any(%s)), count(*)"
                " from public.image_generations where id = any(%s::uuid[])",
                (list(DONE), gids),
            ).fetchone()
            assert row is not None
            if row[0] == row[1] == len(gids):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row[0]} of {len(gids)} generations finished in time")
            time.sleep(0.1)

    def _report(
        self, mode: str, round_no: int, gids: list[str], makespan: float, submitted: float
    ) -> dict[str, Any]:
        rows = self.admin.execute(
            "select status, extract(epoch from completed_at - created_at)"
            " from public.image_generations where id = any(%s::uuid[])",
            (gids,),
        ).fetchall()
        latencies = [float(r[1]) for r in rows if r[0] == "completed" and r[1] is not None]
        stats = self.fake.stats()
        requests = stats.get("requests", {})
        creates = sum(
            sum(v.values())
            for k, v in requests.items()
            if k.startswith("POST") and "predictions" in k and "cancel" not in k
        )
        gets = sum(requests.get("GET /v1/predictions/{id}", {}).values())
        count = len(gids)
        return {
            "mode": mode,
            "round": round_no,
            "generations": count,
            "completed": sum(1 for r in rows if r[0] == "completed"),
            "makespan_s": round(makespan, 2),
            "submit_s": round(submitted, 2),
            "throughput_per_min": round(60.0 * count / makespan, 1),
            "latency_median_s": round(statistics.median(latencies), 2) if latencies else None,
            "latency_p95_s": round(_percentile(latencies, 95), 2) if latencies else None,
            "replicate_creates": creates,
            "replicate_gets": gets,
            "webhooks_sent": stats.get("webhooks", {}).get("sent", 0),
        }


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by_mode: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        spans = [r["makespan_s"] for r in mine]
        by_mode[mode] = {
            "makespan_s": round(statistics.median(spans), 2),
            "throughput_per_min": round(60.0 * args.count / statistics.median(spans), 1),
            "latency_median_s": statistics.median(
                [r["latency_median_s"] for r in mine if r["latency_median_s"] is not None]
            ),
            "replicate_gets": round(statistics.mean(r["replicate_gets"] for r in mine), 1),
        }
    speedup = by_mode["polling"]["makespan_s"] / by_mode["webhook"]["makespan_s"]
    return {**by_mode, "speedup": round(speedup, 2)}


def print_table(
    runs: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace
) -> None:
    bound = args.count * args.latency / args.concurrency
    print(
        f"\nOne worker, {args.count} generations, model latency {args.latency:g} s, "
        f"concurrency {args.concurrency} (polling bound {bound:.0f} s)\n"
    )
    header = (
        f"{'mode':<8} {'round':>5} {'makespan s':>10} {'gen/min':>8} {'lat p50 s':>9} "
        f"{'lat p95 s':>9} {'creates':>7} {'GETs':>6} {'webhooks':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r['mode']:<8} {r['round']:>5} {r['makespan_s']:>10.1f} "
            f"{r['throughput_per_min']:>8.1f} {r['latency_median_s'] or 0:>9.1f} "
            f"{r['latency_p95_s'] or 0:>9.1f} {r['replicate_creates']:>7} "
            f"{r['replicate_gets']:>6} {r['webhooks_sent']:>8}"
        )
    print(
        f"\nmedian makespan: polling {summary['polling']['makespan_s']:.1f} s, "
        f"webhook {summary['webhook']['makespan_s']:.1f} s -> webhook mode is "
        f"{summary['speedup']:.2f}x the throughput\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="generations per run (30)")
    parser.add_argument("--latency", type=float, default=5.0, help="model latency, s (5)")
    parser.add_argument("--concurrency", type=int, default=3, help="worker threads (3)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per mode (1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, s (600)")
    parser.add_argument("--root", type=Path, help="use (or start) the stack in this folder")
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)

    runs: list[dict[str, Any]] = []
    with local_stack(args.root) as state, tempfile.TemporaryDirectory() as logs:
        bench = Bench(state, Path(logs), args)
        try:
            for round_no in range(1, args.rounds + 1):
                order = MODES if round_no % 2 else tuple(reversed(MODES))
                for mode in order:
                    runs.append(bench.run_mode(mode, round_no))
                    print(json.dumps(runs[-1]), file=sys.stderr)
        finally:
            bench.close()
    summary = summarise(runs, args)
    result = {
        "benchmark": "webhook_vs_polling",
        "params": {
            "count": args.count,
            "latency_s": args.latency,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "polling_bound_s": round(args.count * args.latency / args.concurrency, 1),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": runs,
        "summary": summary,
    }
    print_table(runs, summary, args)
    line = json.dumps(result)
    print(line)
    if args.json is not None:
        args.json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
