"""4. Queue cost in the database: claim + complete cycles per second.

- Ours in SQL, with pgbench custom scripts (connected as ``postgres``, the owner of the
  RPCs) in a database of their own (``bench_queue``: the Supabase bootstrap + our
  migrations, no Realtime slot on it), in two shapes:
  - separate calls (the queue's original RPCs): single claim (``claim_next_job`` then
    ``complete_job``) and batch claim (``claim_jobs(10)`` then ten ``complete_job``, one
    transaction each);
  - combined (what the worker calls since issue 15): ``complete_and_claim`` completes the
    jobs the client holds and claims the next ones in one transaction, fenced like
    ``complete_job``: one commit per job (single) or per ten jobs (batch 10).
  1, 4 and 8 clients, the same job count per configuration, on a queue pre-filled with
  exactly that many jobs.
- Ours through the REST RPC path the worker uses (``worker.adapters.rest.SupabaseQueue``
  over supabase-py, service_role) against the stack's /rest/v1, 4 threads: claim then
  complete (single and batch 10), and combined as the daemon does it (``claim_work``, then
  each ``complete_and_claim`` hands over the next job).
- pgqueuer's own dequeue + ack (``bench.pgqueuer_side``), same Postgres cluster, database
  ``bench_pgqueuer``, the same job count, 1, 4 and 8 queue managers, batch size 10.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench import pgqueuer_side
from bench.common import Result, Sizes, Table, ratio
from bench.harness import BenchEnv
from devstack.pg import pg_bindir
from worker import migrate

NAME = "queue_cost"
TITLE = "Queue cost in the database (claim + complete cycles)"
OUR_DB = "bench_queue"
CLIENTS = (1, 4, 8)
REST_THREADS = 4
WORKER_ID = "pgbench"
PAYLOAD = {"prompt": "a lighthouse at dawn", "model_id": "black-forest-labs/flux-schnell",
           "model_version": None, "width": 1024, "height": 1024, "num_inference_steps": 4,
           "guidance_scale": 0.0, "seed": None, "negative_prompt": None,
           "source_image_url": None, "strength": None}

COMPLETE = ("select status from public.complete_job({id}, '{{\"ok\": true}}'::jsonb, null, null,"
            f" true, '{WORKER_ID}');\n")
SCRIPTS = {
    1: (f"select id as job_id from public.claim_next_job(null, '{WORKER_ID}', 300) \\gset\n"
        + COMPLETE.format(id=":job_id::uuid")),
    10: (f"select array_agg(id)::text as ids from public.claim_jobs(10, null, '{WORKER_ID}', 300)"
         " \\gset\n"
         + "".join(COMPLETE.format(id=f"(:ids::uuid[])[{i}]") for i in range(1, 11))),
}
# Combined: each transaction completes what the client holds (:ids, from the last one;
# '{}' at the start) and claims the next batch: one commit per cycle.
COMBINED = ("select coalesce((select array_agg(j ->> 'id') from jsonb_array_elements("
            "public.complete_and_claim(:ids::uuid[], '" + WORKER_ID + "', '{{\"ok\": true}}'::jsonb,"
            " {batch}, null, 300) -> 'jobs') j)::text, '{{}}') as ids \\gset\n")


def _create_database(env: BenchEnv, name: str, setup: bool) -> str:
    """A database owned by ``postgres`` on the stack's cluster; returns its URL."""
    exists = env.admin.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
    if not exists:
        env.admin.execute(sql.SQL("create database {} owner postgres").format(sql.Identifier(name)))
        if setup:
            env.stack.cluster.bootstrap(name)
            migrate.apply(f"postgresql://postgres@127.0.0.1:{env.state.pg_port}/{name}")
    return f"postgresql://postgres@127.0.0.1:{env.state.pg_port}/{name}"


def _refill(url: str, jobs: int, history: int = 0) -> None:
    """Exactly ``jobs`` pending jobs, plus ``history`` completed ones (a day old) when asked:
    finished history stays in job_queue for 7 days in production."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("delete from public.job_queue")
        conn.execute(
            "insert into public.job_queue (job_type, payload, status, attempt_number, result,"
            "  started_at, completed_at, created_at)"
            " select 'generate-image', %s || jsonb_build_object('generation_id', gen_random_uuid()),"
            "  'completed', 1, '{\"history\": true}', now() - interval '1 day',"
            "  now() - interval '1 day', now() - interval '1 day'"
            " from generate_series(1, %s)", (Jsonb(PAYLOAD), history))
        conn.execute(
            "insert into public.job_queue (job_type, payload)"
            " select 'generate-image', %s || jsonb_build_object('generation_id', gen_random_uuid())"
            " from generate_series(1, %s)", (Jsonb(PAYLOAD), jobs))
        conn.execute("vacuum analyze public.job_queue")


def _check(url: str, jobs: int, pending_left: int = 0) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) filter (where status = 'completed' and attempt_number = 1"
            "                        and result ? 'ok'),"
            " count(*) filter (where status = 'processing'),"
            " count(*) filter (where status = 'pending'),"
            " count(*) filter (where attempt_number > 1) from public.job_queue").fetchone()
    assert row is not None
    done, processing, pending, reclaimed = (int(x) for x in row)
    return {"completed_once": done, "processing": processing, "pending": pending,
            "reclaimed": reclaimed,
            "ok": done == jobs and processing == 0 and reclaimed == 0 and pending == pending_left}


def _pgbench(env: BenchEnv, url_db: str, batch: int, clients: int, jobs: int,
             script_dir: Path, *, history: int = 0, backlog: int = 0,
             combined: bool = False) -> dict[str, Any]:
    """pgbench over exactly ``jobs`` jobs; ``backlog`` more stay pending behind them and
    ``history`` completed rows sit in the table. ``combined``: complete_and_claim cycles
    (each client's first transaction only claims, its last only completes)."""
    script = script_dir / f"claim{batch}{'c' if combined else ''}.sql"
    script.write_text(COMBINED.format(batch=batch) if combined else SCRIPTS[batch])
    per_client = jobs // (batch * clients)
    processed = per_client * clients * batch
    _refill(url_db, processed + backlog, history)
    extra = ["-D", "ids={}"] if combined else []
    cmd = [str(pg_bindir() / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(env.state.pg_port),
           "-U", "postgres", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-t",
           str(per_client + (1 if combined else 0)), *extra, "-f", str(script), OUR_DB]
    began = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.monotonic() - began
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    if out.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    cycles_per_s = float(tps.group(1))
    jobs_per_s = cycles_per_s * batch
    held = 0
    if combined:
        # Each client's last cycle claimed jobs it never got to complete (none when it
        # found the queue empty): completed here, untimed, and left out of the rate.
        held = _complete_held(url_db)
        seconds = clients * (per_client + 1) / cycles_per_s
        jobs_per_s = (processed - held) / seconds
        cycles_per_s = jobs_per_s / batch
    path = "SQL combined (pgbench)" if combined else "SQL (pgbench)"
    return {"path": path, "batch": batch, "clients": clients, "history": history,
            "backlog": backlog, "jobs": processed, "cycles_per_s": cycles_per_s,
            "jobs_per_s": jobs_per_s, "latency_ms": float(lat.group(1)) if lat else None,
            "wall_s": wall, "held_at_end": held,
            "integrity": _check(url_db, processed, backlog)}


def _complete_held(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(
            "select id from public.job_queue where status = 'processing' and locked_by = %s",
            (WORKER_ID,)).fetchall()]
        if ids:
            conn.execute("select public.complete_and_claim(%s, %s, %s)",
                         (ids, WORKER_ID, Jsonb({"ok": True})))
    return len(ids)


def _rest(env: BenchEnv, batch: int, jobs: int, *, combined: bool = False) -> dict[str, Any]:
    from supabase import ClientOptions, create_client

    from worker.adapters.rest import SupabaseQueue
    from worker.ports import Chain

    main_url = env.state.database_url
    _refill(main_url, jobs)
    done = 0
    lock = threading.Lock()
    errors: list[str] = []

    def loop() -> None:
        nonlocal done
        client = create_client(env.state.url, env.state.keys.service_role_key,
                               ClientOptions(auto_refresh_token=False, persist_session=False))
        queue = SupabaseQueue(client)
        chain = Chain(1, ("generate-image",), 300)
        try:
            if combined:  # as the worker: claim_work, then each completion claims the next
                held = list(queue.claim_work(1, ["generate-image"], WORKER_ID, 300).jobs)
                while held:
                    nxt = queue.complete_and_claim(held[0].id, WORKER_ID, {"ok": True}, chain)
                    with lock:
                        done += 1
                    held = list(nxt.jobs)
                return
            while True:
                claimed = queue.claim(batch, ["generate-image"], WORKER_ID, 300)
                if not claimed:
                    return
                for job in claimed:
                    queue.complete(job.id, WORKER_ID, {"ok": True})
                with lock:
                    done += len(claimed)
        except Exception as exc:  # reported in the table, never swallowed
            errors.append(repr(exc))

    threads = [threading.Thread(target=loop) for _ in range(REST_THREADS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    check = _check(main_url, jobs)
    check["errors"] = errors
    check["ok"] = bool(check["ok"]) and not errors
    with psycopg.connect(main_url, autocommit=True) as conn:
        conn.execute("delete from public.job_queue")
    path = "REST RPC combined (supabase-py)" if combined else "REST RPC (supabase-py)"
    return {"path": path, "batch": batch, "clients": REST_THREADS,
            "history": 0, "backlog": 0,
            "jobs": done, "cycles_per_s": done / batch / seconds, "jobs_per_s": done / seconds,
            "latency_ms": None, "wall_s": seconds, "integrity": check}


def run(env: BenchEnv, sizes: Sizes) -> Result:
    ours_url = _create_database(env, OUR_DB, setup=True)
    theirs_url = _create_database(env, pgqueuer_side.DB_NAME, setup=False)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pgbench-") as tmp:
        for combined in (False, True):
            for batch in (1, 10):
                for clients in CLIENTS:
                    rows.append(_pgbench(env, ours_url, batch, clients, sizes.queue_jobs,
                                         Path(tmp), combined=combined))
        # The table's state matters: a week of finished history, a backlog, a burst.
        for history, backlog in ((sizes.history_rows, sizes.queue_jobs),
                                 (0, 5 * sizes.queue_jobs)):
            for batch in (1, 10):
                rows.append(_pgbench(env, ours_url, batch, 1, max(100, sizes.queue_jobs // 20),
                                     Path(tmp), history=history, backlog=backlog))
    for batch in (1, 10):
        rows.append(_rest(env, batch, sizes.rest_jobs))
    rows.append(_rest(env, 1, sizes.rest_jobs, combined=True))
    theirs = ([pgqueuer_side.drain(theirs_url, n, sizes.queue_jobs) for n in CLIENTS]
              if pgqueuer_side.available() else [])

    table = Table(
        f"Claim + complete, {sizes.queue_jobs:,} jobs per SQL/pgqueuer row, "
        f"{sizes.rest_jobs:,} per REST row",
        ["path", "claim", "clients", "history rows", "backlog", "jobs", "cycles/s", "jobs/s",
         "latency ms", "exactly once"],
    )
    for r in rows:
        table.add(r["path"], "single" if r["batch"] == 1 else f"batch {r['batch']}",
                  r["clients"], r["history"], r["backlog"], r["jobs"], r["cycles_per_s"],
                  r["jobs_per_s"],
                  r["latency_ms"],
                  bool(r["integrity"]["ok"]))
    for d in theirs:
        table.add("pgqueuer (asyncpg, QueueManager drain)", f"batch {pgqueuer_side.BATCH}",
                  d.consumers, 0, 0, d.processed, d.jobs_per_s / pgqueuer_side.BATCH,
                  d.jobs_per_s,
                  None, d.processed == d.jobs)
    table.notes += [
        "cycle = one claim call and the completes of what it returned; ours completes each "
        "job in its own transaction (complete_job), as the worker does.",
        "Postgres runs with fsync on; one commit costs an fdatasync on this disk.",
        "history rows: completed jobs left in job_queue (production keeps them 7 days); "
        "backlog: pending jobs still waiting behind the ones the run claims. The other SQL rows "
        "start from a table holding exactly the run's own jobs.",
        "REST rows go through the stack's PostgREST-compatible server (Python) with its "
        "Realtime WAL decoder running, as the worker's calls do.",
        "pgqueuer clients are asyncio queue managers in one Python process; pgbench is C."
        if theirs else "pgqueuer is not installed: pip install -e '.[bench]' (make bench does).",
    ]
    ratios = Table(
        "Ratio ours / pgqueuer, jobs/s at the same client count (separate: a claim, then one "
        "complete_job transaction per job; combined: complete_and_claim, one transaction per "
        "cycle; pgqueuer batches its acks)",
        ["clients", "pgqueuer jobs/s", "separate single x", "separate batch 10 x",
         "combined single x", "combined batch 10 x"],
    )

    def ours(batch: int, clients: int, path: str) -> float:
        return float(next(r["jobs_per_s"] for r in rows if r["batch"] == batch
                          and r["clients"] == clients and r["path"] == path
                          and not r["history"] and not r["backlog"]))

    for d in theirs:
        ratios.add(d.consumers, d.jobs_per_s,
                   *(ratio(ours(batch, d.consumers, path), d.jobs_per_s)
                     for path in ("SQL (pgbench)", "SQL combined (pgbench)")
                     for batch in (1, 10)))
    return Result(NAME, TITLE, [table, ratios], {
        "ours": rows,
        "pgqueuer": [{"consumers": d.consumers, "jobs": d.jobs, "processed": d.processed,
                      "seconds": d.seconds, "jobs_per_s": d.jobs_per_s,
                      "batch_size": pgqueuer_side.BATCH} for d in theirs],
        "pgqueuer_version": _version("pgqueuer"),
    })


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
