"""Operator and development subcommands (registered onto the CLI parser)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from worker import generate


def register(sub: Any) -> None:
    """Add the operations commands to ``sub`` (argparse subparsers)."""
    _add_functions(sub)
    _add_status(sub)
    _add_retry(sub)
    _add_requeue(sub)
    _add_enqueue(sub)
    _add_cancel(sub)
    generate.register(sub)


# -- functions ------
def _add_functions(sub: Any) -> None:
    functions = sub.add_parser(
        "functions",
        help="serve the edge-function HTTP contracts (functions_compat)",
        description=(
            "Serve start-generation, process-jobs, process-generation and generate-image "
            "at /<name> and /functions/v1/<name>. Configured by environment variables "
            "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_JWT_SECRET, FUNCTIONS_*, "
            "and the worker's REPLICATE_*/WORKER_* for process-jobs and process-generation)."
        ),
    )
    functions.add_argument("--host", default="0.0.0.0", help="interface (default 0.0.0.0)")
    functions.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    functions.set_defaults(func=_cmd_functions)


def _cmd_functions(args: argparse.Namespace) -> int:
    import os
    import signal

    import uvicorn

    from functions_compat.app import create_app
    from functions_compat.config import FunctionsConfig
    from worker import logs
    from worker.errors import ConfigError

    try:
        config = FunctionsConfig.from_env(os.environ)
        app = create_app(os.environ)
    except ConfigError as exc:
        print(f"picture-worker: configuration error: {exc.message}", file=sys.stderr)
        return 2
    settings = config.worker_settings
    logs.configure(
        settings.log_level if settings else "INFO",
        settings.log_format if settings else "auto",
        config.secrets(),
    )
    # uvicorn stops gracefully on SIGTERM and then re-raises the signal under the handler it
    # found: make that one a no-op so a requested stop exits 0, as `run` does.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # keep the worker's logging (JSON, secrets redacted)
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


# -- operations: status, retry, requeue, enqueue, cancel ------
# Exit codes: 0 ok, 1 the operation failed or found nothing, 2 usage or configuration error.
# They need SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY only (worker.ops.OpsSettings).
_OPS_ENV = "Needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY. Exit codes: 0 ok, 1 failed or "
_OPS_ENV += "nothing found, 2 usage or configuration error."


def _ops_parser(sub: Any, name: str, help_text: str, description: str) -> Any:
    parser = sub.add_parser(name, help=help_text, description=f"{description} {_OPS_ENV}")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    return parser


def _add_status(sub: Any) -> None:
    parser = _ops_parser(
        sub,
        "status",
        "queue, workers and recent failures at a glance",
        "Queue summary, counts per job type and status, live workers, the 10 most recent "
        "failures and the number of stuck jobs (the monitoring views).",
    )
    parser.set_defaults(func=_cmd_status)


def _add_retry(sub: Any) -> None:
    parser = _ops_parser(
        sub,
        "retry",
        "put failed jobs back in the queue",
        "Put a failed job (or, with --failed, failed jobs in bulk, oldest first) back to "
        "pending, due now, with its attempts reset; its generation goes back to queued.",
    )
    parser.add_argument("job_id", nargs="?", metavar="JOB_ID", help="the job to retry")
    parser.add_argument("--failed", action="store_true", help="retry failed jobs in bulk")
    parser.add_argument("--type", dest="job_type", help="with --failed: only this job type")
    parser.add_argument(
        "--limit", type=int, default=100, help="with --failed: at most N jobs (default 100)"
    )
    parser.add_argument(
        "--cancelled", action="store_true", help="also retry cancelled jobs (and generations)"
    )
    parser.set_defaults(func=_cmd_retry)


def _add_requeue(sub: Any) -> None:
    parser = _ops_parser(
        sub,
        "requeue",
        "return stuck jobs (lease expired) to the queue",
        "Run requeue_stale_jobs(): jobs processing past their lease go back to pending, or "
        "to failed when their attempts are used up. pg_cron and every worker also run it "
        "each minute.",
    )
    parser.add_argument("--stuck", action="store_true", required=True, help="(required)")
    parser.set_defaults(func=_cmd_requeue)


def _add_enqueue(sub: Any) -> None:
    parser = _ops_parser(
        sub,
        "enqueue",
        "add a job to the queue",
        "Enqueue a job through enqueue_job() and print its id (with --dedupe-key, the id of "
        "the live job holding that key, if any).",
    )
    parser.add_argument("job_type", metavar="TYPE", help="generate-image, download-image, ...")
    parser.add_argument("payload", metavar="PAYLOAD_JSON", help="the job payload, a JSON object")
    parser.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    parser.add_argument("--max-attempts", type=int, default=3, help="attempts (default 3)")
    parser.add_argument("--dedupe-key", help="at most one live job per key")
    parser.set_defaults(func=_cmd_enqueue)


def _add_cancel(sub: Any) -> None:
    parser = _ops_parser(
        sub,
        "cancel",
        "cancel a generation and its jobs",
        "Run cancel_generation() as service role: the generation becomes cancelled, its "
        "pending jobs cancelled; a running job stops at its next heartbeat.",
    )
    parser.add_argument("generation_id", metavar="GENERATION_ID")
    parser.set_defaults(func=_cmd_cancel)


def _run_ops(args: argparse.Namespace, action: Callable[[Any], int]) -> int:
    """Load OpsSettings, connect, run ``action(operations)``; errors become one line."""
    from worker import ops
    from worker.errors import ConfigError

    try:
        settings = ops.OpsSettings.load()
        return action(ops.connect(settings))
    except ConfigError as exc:
        return _ops_fail(f"configuration error: {exc.message}", ops.EXIT_USAGE)
    except ops.OpsError as exc:
        return _ops_fail(exc.message, exc.exit_code)


def _ops_fail(message: str, code: int) -> int:
    print(f"picture-worker: {message}", file=sys.stderr)
    return code


def _print_json(doc: Any) -> None:
    import json

    print(json.dumps(doc, indent=2, sort_keys=False, default=str))


def _cmd_status(args: argparse.Namespace) -> int:
    def action(operations: Any) -> int:
        report = operations.status()
        if args.json:
            _print_json(report.to_json())
        else:
            print(_render_status(report))
        return 0

    return _run_ops(args, action)


def _cmd_retry(args: argparse.Namespace) -> int:
    from worker import ops

    try:
        if args.failed == bool(args.job_id):
            raise ops.OpsError("give either JOB_ID or --failed [--type TYPE]", ops.EXIT_USAGE)
        if args.job_id and args.job_type:
            raise ops.OpsError("--type goes with --failed, not with JOB_ID", ops.EXIT_USAGE)
        if args.limit < 1:
            raise ops.OpsError("--limit must be at least 1", ops.EXIT_USAGE)
        job_id = ops.parse_uuid(args.job_id, "JOB_ID") if args.job_id else None
        job_type = ops.check_job_type(args.job_type) if args.job_type else None
    except ops.OpsError as exc:
        return _ops_fail(exc.message, exc.exit_code)

    def action(operations: Any) -> int:
        skipped = 0
        if job_id is not None:
            count = operations.retry_job(job_id, include_cancelled=args.cancelled)
        else:
            count, skipped = operations.retry_failed(
                job_type, args.limit, include_cancelled=args.cancelled
            )
        what = "failed or cancelled" if args.cancelled else "failed"
        if args.json:
            _print_json({"requeued": count, "skipped": skipped, "job_id": job_id})
        elif job_id is not None:
            print(f"job {job_id} requeued (pending, attempts reset)")
        else:
            scope = f" {job_type}" if job_type else ""
            print(f"{count} {what}{scope} job(s) requeued" if count else f"no {what}{scope} jobs")
            if skipped:
                print(
                    f"{skipped} skipped: another live job holds their dedupe key "
                    "(they stay failed; see `picture-worker status`)"
                )
        return 0 if count else 1

    return _run_ops(args, action)


def _cmd_requeue(args: argparse.Namespace) -> int:
    def action(operations: Any) -> int:
        count = operations.requeue_stuck()
        if args.json:
            _print_json({"requeued": count})
        else:
            print(f"{count} stuck job(s) requeued" if count else "no stuck jobs")
        return 0 if count else 1

    return _run_ops(args, action)


def _cmd_enqueue(args: argparse.Namespace) -> int:
    from worker import ops

    try:
        job_type = ops.check_job_type(args.job_type)
        payload = ops.parse_payload(job_type, args.payload)
        if args.max_attempts < 1:
            raise ops.OpsError("--max-attempts must be at least 1", ops.EXIT_USAGE)
    except ops.OpsError as exc:
        return _ops_fail(exc.message, exc.exit_code)

    def action(operations: Any) -> int:
        job_id = operations.enqueue(
            job_type,
            payload,
            priority=args.priority,
            max_attempts=args.max_attempts,
            dedupe_key=args.dedupe_key,
        )
        print(json_line({"job_id": job_id}) if args.json else job_id)
        return 0

    return _run_ops(args, action)


def _cmd_cancel(args: argparse.Namespace) -> int:
    from worker import ops

    try:
        generation_id = ops.parse_uuid(args.generation_id, "GENERATION_ID")
    except ops.OpsError as exc:
        return _ops_fail(exc.message, exc.exit_code)

    def action(operations: Any) -> int:
        result = operations.cancel(generation_id)
        if args.json:
            _print_json(result.to_json())
        else:
            print(
                f"generation {generation_id} cancelled (was {result.previous_status}); "
                f"{result.jobs_cancelled} job(s) cancelled"
            )
        return 0

    return _run_ops(args, action)


def json_line(doc: Any) -> str:
    import json

    return json.dumps(doc, default=str)


# -- rendering ------
Column = tuple[str, str, Callable[[Any], str]]


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _when(value: Any) -> str:
    from worker.jobs import parse_ts

    try:
        ts = parse_ts(value)
    except ValueError:
        return _text(value)
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}s"


def _short(width: int) -> Callable[[Any], str]:
    def cut(value: Any) -> str:
        text = " ".join(_text(value).split())
        return text if len(text) <= width else text[: width - 1] + "…"

    return cut


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str) -> str:
    """An aligned table (numbers right-aligned), indented by two spaces."""
    if not rows:
        return f"  {empty}"
    cells = [[fmt(row.get(key)) for _, key, fmt in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]
    numeric = [all(_numeric(c[i]) for c in cells) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        padded = zip(values, widths, numeric, strict=True)
        return ("  " + "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in padded)).rstrip()

    return "\n".join([line([h for h, _, _ in columns]), *(line(c) for c in cells)])


def _numeric(cell: str) -> bool:
    return cell == "-" or cell.removesuffix("s").replace(".", "", 1).isdigit()


_BY_TYPE: Sequence[Column] = (
    ("TYPE", "job_type", _text),
    ("STATUS", "status", _text),
    ("COUNT", "count", _text),
    ("OLDEST", "oldest_job", _when),
    ("NEWEST", "newest_job", _when),
    ("AVG DURATION", "avg_duration_seconds", _seconds),
    ("AVG ATTEMPTS", "avg_attempts", _text),
)
_WORKERS: Sequence[Column] = (
    ("WORKER", "worker_id", _text),
    ("HOST", "hostname", _text),
    ("VERSION", "version", _text),
    ("THREADS", "concurrency", _text),
    ("IN FLIGHT", "in_flight", _text),
    ("DONE", "jobs_done", _text),
    ("FAILED", "jobs_failed", _text),
    ("REALTIME", "realtime_connected", _text),
    ("STARTED", "started_at", _when),
    ("SEEN AGO", "seconds_since_seen", _seconds),
)
_FAILURES: Sequence[Column] = (
    ("JOB", "id", _text),
    ("TYPE", "job_type", _text),
    ("GENERATION", "generation_id", _text),
    ("ATTEMPTS", "attempt_number", _text),
    ("FAILED AT", "completed_at", _when),
    ("ERROR", "error_message", _short(60)),
)


def _render_status(report: Any) -> str:
    s = report.summary
    out = [
        "Queue",
        f"  pending {_text(s.get('pending'))} (due now {_text(s.get('pending_due'))}, "
        f"oldest due waiting {_seconds(s.get('oldest_due_wait_seconds'))})   "
        f"processing {_text(s.get('processing'))}   stuck {report.stuck_jobs}",
        f"  last hour: completed {_text(s.get('completed_last_hour'))}, "
        f"failed {_text(s.get('failed_last_hour'))}, "
        f"avg processing {_seconds(s.get('avg_processing_seconds'))}",
    ]
    if not report.workers and (s.get("pending_due") or 0) > 0:
        out.append("  WARNING: jobs are due and no worker has been seen in the last 2 minutes")
    out += ["", "By type and status", _table(report.by_type, _BY_TYPE, "(no jobs)")]
    out += ["", f"Workers ({len(report.workers)} live)"]
    out.append(_table(report.workers, _WORKERS, "(none seen in the last 2 minutes)"))
    shown = len(report.recent_failures)
    out += ["", f"Recent failures (24 h, newest {shown})" if shown else "Recent failures (24 h)"]
    out.append(_table(report.recent_failures, _FAILURES, "(none)"))
    return "\n".join(out)
