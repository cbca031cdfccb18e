"""`picture-worker`: parses the arguments, loads the Settings, configures logging and runs
the command. The services come from ``worker.wiring`` (the composition root); commands
import what they need when they run, so ``--help`` stays fast.

    picture-worker run [--once]        the daemon
    picture-worker functions           serve the edge-function HTTP contracts (functions_compat)
    picture-worker status|retry|requeue|enqueue|cancel    operations (see `--help` of each)
    picture-worker migrate             apply supabase/migrations to DATABASE_URL
    picture-worker stack|demo          the local stack and the demo, registered by the
                                       development distribution (dev/) when it is installed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from worker import __version__
from worker.errors import ConfigError

if TYPE_CHECKING:
    from worker.services import Services
    from worker.settings import Settings

log = logging.getLogger("worker.cli")


def _fail(message: str, code: int = 2) -> int:
    print(f"picture-worker: {message}", file=sys.stderr)
    return code


# -- run ------
def cmd_run(args: argparse.Namespace) -> int:
    from worker import logs
    from worker.settings import Settings

    # Flags override their variables: passed under the variables' names (the settings read
    # aliases only).
    overrides: dict[str, object] = {}
    if args.concurrency is not None:
        overrides["WORKER_CONCURRENCY"] = args.concurrency
    if args.no_realtime:
        overrides["WORKER_REALTIME"] = False
    try:
        settings = Settings.load(**overrides)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc.message}")
    logs.configure(settings.log_level, settings.log_format, settings.secrets())
    return asyncio.run(_run_daemon(settings, once=args.once))


async def _run_daemon(settings: Settings, *, once: bool) -> int:
    from worker import wiring
    from worker.daemon import Daemon
    from worker.health import HealthServer
    from worker.metrics import worker_metrics

    services = wiring.build_services(settings)
    metrics = worker_metrics()
    daemon = Daemon(services, metrics, once=once, wakeups_factory=wiring.realtime_wakeups(settings))
    probed = asyncio.Event()

    async def ready() -> tuple[bool, dict[str, object]]:
        if not probed.is_set():
            return False, {"supabase": "not reached yet"}
        fresh = time.monotonic() - daemon.last_db_ok < max(30.0, 3 * settings.poll_interval)
        if not fresh:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None, lambda: services.queue.next_scheduled_at(settings.job_types)
            )
            daemon.last_db_ok = time.monotonic()
        return True, {"realtime": daemon.realtime_connected, "in_flight": len(daemon.in_flight)}

    # A key the project refuses ends the start before anything else is printed or served.
    problem = await probe_supabase(services, settings, retry=False)
    if problem is not None:
        return _fail(problem)
    health = None
    if settings.health_port and not once:
        health = HealthServer(settings.health_host, settings.health_port, metrics, ready)
        try:
            await health.start()
        except OSError as exc:
            where = f"{settings.health_host}:{settings.health_port}"
            return _fail(f"WORKER_HEALTH_PORT: cannot listen on {where}: {exc}")
    try:
        problem = await probe_supabase(services, settings)
        if problem is not None:
            return _fail(problem)
        probed.set()
        code = await daemon.run()
    finally:
        if health is not None:
            await health.stop()
    _exit_if_threads_linger(code)
    return code


PROBE_BACKOFF_CAP = 30.0
PROBE_SCHEMA_GRACE = 15.0  # seconds of PGRST202 at start before it means missing migrations


async def probe_supabase(
    services: Services, settings: Settings, *, retry: bool = True
) -> str | None:
    """One service-role-only call before the loop starts. A key the project refuses (wrong,
    anon or publishable; 401, 403, 42501) or missing migrations end the start with one line
    (exit 2); an unreachable or failing Supabase is retried until it answers (readiness
    stays false meanwhile). Returns the problem, or None when Supabase answered (or, with
    ``retry=False``, when it did not refuse: the retrying probe then waits for it)."""
    from worker.errors import PermanentError, SchemaNotReady, WorkerError

    loop = asyncio.get_running_loop()
    delay = 1.0
    schema_since: float | None = None
    while True:
        try:
            with _quiet("worker.supabase"):  # the probe's own line says it, once
                await loop.run_in_executor(
                    None, lambda: services.queue.next_scheduled_at(settings.job_types)
                )
            return None
        except SchemaNotReady as exc:
            # Just after `db push` PostgREST may not list the functions for a moment; for
            # longer, the migrations are missing.
            schema_since = schema_since or time.monotonic()
            if time.monotonic() - schema_since >= PROBE_SCHEMA_GRACE:
                return refused_key_message(exc)
            await asyncio.sleep(1.0)
            continue
        except PermanentError as exc:
            return refused_key_message(exc)
        except WorkerError as exc:
            if not retry:
                return None
            log.warning(
                "cannot reach Supabase yet (%s); retrying in %.0fs",
                exc.message,
                delay,
                extra={"action": "worker.waiting_for_supabase"},
            )
        await asyncio.sleep(delay)
        delay = min(PROBE_BACKOFF_CAP, delay * 2)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence one logger's records below CRITICAL for the duration."""
    target = logging.getLogger(logger)
    before = target.level
    target.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(before)


def refused_key_message(exc: Exception) -> str:
    """One line naming the variable for a refusal of the start-up probe."""
    from postgrest.exceptions import APIError

    cause = exc.__cause__
    code = str(cause.code or "") if isinstance(cause, APIError) else ""
    detail = str(cause.message or "") if isinstance(cause, APIError) else str(exc)
    if code in ("PGRST202", "42883", "PGRST205"):
        return (
            f"SUPABASE_URL: the project has no picture-worker schema ({detail}, code {code}): "
            "apply supabase/migrations first (supabase db push)"
        )
    why = f"{detail}, code {code}" if code else detail
    return (
        f"SUPABASE_SERVICE_ROLE_KEY: the project refused this key ({why}): use the "
        "service_role or sb_secret_ key, not the anon or publishable one"
    )


def _exit_if_threads_linger(code: int) -> None:
    """Job threads cannot be killed; once their jobs are released, do not wait for them."""
    lingering = [t for t in threading.enumerate() if t.name.startswith("job") and t.is_alive()]
    if lingering:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(t.is_alive() for t in lingering):
            time.sleep(0.05)
        if any(t.is_alive() for t in lingering):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


# -- migrate ------
def cmd_migrate(args: argparse.Namespace) -> int:
    from worker import migrate

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        return _fail("DATABASE_URL: required but not set (or pass --database-url)")
    if args.dir and not Path(args.dir).is_dir():
        return _fail(f"--dir {args.dir}: no such folder")
    try:
        applied = migrate.apply(
            url,
            Path(args.dir) if args.dir else None,
            dry_run=args.dry_run,
            log=lambda m: print(m, flush=True),
        )
    except migrate.MigrationError as exc:
        return _fail(f"migration failed: {exc}", 1)
    except Exception as exc:  # connection problems and the like: one line, no trace
        return _fail(f"cannot migrate: {type(exc).__name__}: {' '.join(str(exc).split())}", 1)
    verb = "would apply" if args.dry_run else "applied"
    print(
        f"{verb} {len(applied)} migration(s); database is up to date"
        if not args.dry_run
        else f"{verb} {len(applied)} migration(s)"
    )
    return 0


# -- parser ------
class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (exit 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"picture-worker: {message} (see `{self.prog} --help`)\n")


def concurrency_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be between 1 and 64, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="picture-worker",
        description="Supabase job-queue worker for the Picture app's image generations.",
    )
    parser.add_argument("--version", action="version", version=f"picture-worker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the worker daemon",
        description="Run the daemon. Configured by environment variables (see README).",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="process until the queue is empty (retries due within 30 s included), then exit",
    )
    run.add_argument(
        "--concurrency",
        type=concurrency_arg,
        metavar="N",
        help="job threads, 1-64 (overrides WORKER_CONCURRENCY)",
    )
    run.add_argument(
        "--no-realtime", action="store_true", help="poll only (overrides WORKER_REALTIME)"
    )
    run.set_defaults(func=cmd_run)

    mig = sub.add_parser("migrate", help="apply supabase/migrations to a database (self-hosted)")
    mig.add_argument("--database-url", help="Postgres URL (default: DATABASE_URL)")
    mig.add_argument("--dir", help="migrations folder (default: supabase/migrations)")
    mig.add_argument("--dry-run", action="store_true", help="list what would be applied")
    mig.set_defaults(func=cmd_migrate)

    from worker import commands

    commands.register(sub)
    _register_plugins(sub)
    return parser


PLUGIN_GROUP = "picture_worker.commands"


def _register_plugins(sub: argparse._SubParsersAction[Parser]) -> None:
    """Commands of other installed distributions (the development distribution adds
    ``stack`` and ``demo``): each entry point is a callable taking the subparsers."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:  # a half-installed plugin must not break the product
            log.debug("command plugin %s not loaded: %s", entry.name, exc)
            continue
        register(sub)


# Commands the development distribution (dev/) registers; named here only to say so when a
# runtime install (the Docker image) is asked for one.
DEV_COMMANDS = ("stack", "demo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and argv[0] in DEV_COMMANDS and argv[0] not in sub.choices:
        return _fail(
            f"`{argv[0]}` is a development tool, not part of this install: "
            "install the development distribution (pip install -e ./dev) from a checkout"
        )
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`picture-worker status | head`): stop quietly, and keep
        # Python's final flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
