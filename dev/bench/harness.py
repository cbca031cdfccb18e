"""The benchmarks' stack and the app's side of it.

``BenchEnv`` brings up one local stack (real PostgreSQL 15 with fsync on, the
Supabase-compatible server and the fake Replicate) in a temporary folder and, on demand,
``picture-worker functions`` (functions_compat: start-generation, process-jobs) as the
Picture app's edge functions. Every benchmark of a run uses this one Postgres, so the
side-by-side comparisons share the machine and the database. The real daemon runs as
``tests.support.WorkerProcess`` subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from supabase import ClientOptions, create_client

from bench.cpu import CpuMeter, postmaster_pid
from devstack.pg import free_port
from devstack.stack import Stack, StackState
from tests.support import Fake, Picture, WorkerProcess, worker_env
from worker.settings import Settings

FLUX = "black-forest-labs/flux-schnell"
JITTER = 0.2  # every benchmark's provider latency: uniform +-20 % around L
SEED = 15  # ... drawn in the same sequence in every run (the fake's random_seed)
DEFAULT_POLL_INTERVAL = float(Settings.model_fields["poll_interval"].default)
DEFAULT_CONCURRENCY = int(Settings.model_fields["concurrency"].default)


@dataclass(frozen=True)
class AppUser:
    id: str
    token: str


class FunctionsServer:
    """``picture-worker functions`` on a free loopback port, configured for the local stack
    (plain-http downloads from the fake allowed). The per-user in-flight limit is the
    database's; ``BenchEnv`` lifts it."""

    def __init__(self, state: StackState, log_path: Path) -> None:
        self.state = state
        self.log_path = log_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/functions/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> FunctionsServer:
        env = worker_env(self.state, WORKER_LOG_FORMAT="text", WORKER_LOG_LEVEL="WARNING")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "functions", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=env, cwd=Path(__file__).resolve().parents[2], stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"functions server exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.options(f"{self.base}/start-generation", timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError("functions server did not start: " + self.log_path.read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class BenchEnv:
    """One stack for a whole benchmark run; ``close()`` stops everything it started."""

    def __init__(self, *, fast: bool = False, log_dir: Path | None = None) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="picture-bench-"))
        self.root = self._tmp
        self.log_dir = log_dir or self.root / "logs"  # worker and functions logs (kept there)
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(self.root / "stack", fast=fast)
        self.fast = fast
        self.state: StackState = self.stack.up()
        self.fake = Fake(self.state)
        self.jitter = JITTER
        self._admin: psycopg.Connection[Any] | None = None
        self._functions: FunctionsServer | None = None
        self._users: list[AppUser] = []
        self._lock = threading.Lock()
        # Bursts of hundreds of generations per user: no per-user in-flight limit.
        self.admin.execute("update public.picture_settings set max_in_flight_per_user = 0")

    # -- connections ------
    def dsn(self, user: str = "supabase_admin", dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.state.pg_port} user={user} dbname={dbname}"

    @property
    def admin(self) -> psycopg.Connection[Any]:
        """Superuser connection (setup and read-back only, never the code under test)."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(self.dsn(), autocommit=True)
        return self._admin

    def postgres_version(self) -> str:
        row = self.admin.execute("select version()").fetchone()
        return str(row[0]) if row else "?"

    def configure_fake(self, latency: float, **extra: Any) -> None:
        """Forget the fake's predictions and counters; latency L +- ``self.jitter`` x L,
        the same sequence of latencies in every run (seeded), no queueing at the fake."""
        httpx.post(f"{self.state.replicate_url}/_fake/reset", json={"predictions": True},
                   timeout=30).raise_for_status()
        self.fake.configure(latency_seconds=latency, latency_jitter=self.jitter * latency,
                            random_seed=SEED, queue_seconds=0.0, **extra)

    def fake_predictions(self) -> list[dict[str, Any]]:
        """The fake's record of every prediction (timestamps, GETs, cancels, webhooks)."""
        response = httpx.get(f"{self.state.replicate_url}/_fake/predictions", timeout=30)
        response.raise_for_status()
        return list(response.json()["predictions"])

    def clear(self) -> None:
        """Empty the queue and the app's tables between runs (users stay)."""
        # Generations before jobs: deleting an unfinished generation cancels its jobs (and
        # may enqueue the cancel of its prediction), which the job delete then sweeps away.
        self.admin.execute(
            "delete from public.images; delete from public.image_generations;"
            " delete from public.job_queue; delete from public.job_workers;"
            " delete from storage.objects where bucket_id = 'generated-images'"
        )
        self.admin.execute("vacuum analyze public.job_queue")

    # -- the app ------
    def functions(self) -> FunctionsServer | None:
        """The edge functions (functions_compat), or None where they are not installed."""
        if self._functions is None:
            try:
                import functions_compat.app  # noqa: F401
            except ImportError:
                return None
            self._functions = FunctionsServer(self.state, self.log_dir / "functions.log").start()
        return self._functions

    def users(self, count: int) -> list[AppUser]:
        """Signed-up app users (through /auth/v1, like the app), created once."""
        while len(self._users) < count:
            client = create_client(self.state.url, self.state.keys.anon_key,
                                   ClientOptions(auto_refresh_token=False, persist_session=False))
            email = f"bench-{uuid.uuid4().hex[:12]}@example.test"
            res = client.auth.sign_up({"email": email, "password": "correct-horse-battery-42"})
            if res.session is None or res.user is None:
                raise RuntimeError("sign-up returned no session")
            self._users.append(AppUser(str(res.user.id), res.session.access_token))
        return self._users[:count]

    def worker(self, **env: Any) -> WorkerProcess:
        """The daemon with production defaults (the tests' helper polls every 2 s)."""
        env.setdefault("WORKER_POLL_INTERVAL", f"{DEFAULT_POLL_INTERVAL:g}")
        return WorkerProcess(self.state, self.log_dir, **env)

    def server_pid(self) -> int:
        """The stack server's process (REST, Realtime, Storage, Auth and the fake Replicate)."""
        return int(self.stack.pid_file.read_text().strip())

    def postgres_pid(self) -> int | None:
        """The postmaster; its descendants are the backends, the WAL sender, ..."""
        return postmaster_pid(self.stack.cluster.datadir)

    def functions_pid(self) -> int | None:
        """``picture-worker functions``, when a benchmark started it."""
        proc = self._functions.proc if self._functions is not None else None
        return proc.pid if proc is not None and proc.poll() is None else None

    def cpu_meter(self, workers: dict[str, int]) -> CpuMeter:
        """CPU of each worker, the stack server, Postgres, the functions server (when
        running) and this benchmark's own process, plus the rest of the machine."""
        trees: dict[str, int | None] = dict(workers)
        trees.update({"stack server (REST, Realtime, Storage, fake Replicate)": self.server_pid(),
                      "Postgres (all backends)": self.postgres_pid(),
                      "functions server": self.functions_pid()})
        return CpuMeter(trees, alone={"benchmark driver": os.getpid()})

    def close(self) -> None:
        if self._functions is not None:
            self._functions.stop()
        if self._admin is not None:
            self._admin.close()
        self.stack.down()
        shutil.rmtree(self._tmp, ignore_errors=True)


class Submitter:
    """Creates generations as the app does: ``POST /functions/v1/start-generation`` with the
    user's JWT (round-robin over users); ``Picture.submit`` (the same rows through REST)
    where the functions are not installed."""

    def __init__(self, env: BenchEnv, users: int = 8) -> None:
        self.env = env
        self.users = env.users(users)
        server = env.functions()
        self.base = server.base if server is not None else None
        self.via = "start-generation" if self.base else "Picture.submit (REST)"
        self._picture = None if self.base else Picture(env.state)
        self._http = httpx.Client(timeout=30)
        self._next = 0
        self._lock = threading.Lock()

    def submit(self, prompt: str) -> str:
        with self._lock:
            user = self.users[self._next % len(self.users)]
            self._next += 1
        if self._picture is not None:
            return self._picture.submit(user.id, prompt, FLUX)[0]
        response = self._http.post(
            f"{self.base}/start-generation",
            headers={"Authorization": f"Bearer {user.token}"},
            json={"prompt": prompt, "model_id": FLUX},
        )
        if response.status_code != 200:
            raise RuntimeError(f"start-generation {response.status_code}: {response.text}")
        return str(response.json()["generation_id"])

    def close(self) -> None:
        self._http.close()


@contextlib.contextmanager
def running_all(workers: list[WorkerProcess], subscribed: bool = False
                ) -> Iterator[list[WorkerProcess]]:
    """Start the workers together (they boot in parallel), wait until each is ready (and
    subscribed to Realtime), stop them all (SIGTERM, drain) at the end."""
    started: list[WorkerProcess] = []
    try:
        for worker in workers:
            started.append(worker.start())
        for worker in workers:
            worker.wait_ready(timeout=60)
            if subscribed:
                worker.wait_subscribed(timeout=60)
        yield workers
    finally:
        for worker in started:
            worker.stop(timeout=60)


@contextlib.contextmanager
def running(worker: WorkerProcess, subscribed: bool = False) -> Iterator[WorkerProcess]:
    with running_all([worker], subscribed):
        yield worker

def bulk_generations(env: BenchEnv, count: int, users: list[AppUser],
                     prompt: str = "bench: a lighthouse at dawn") -> list[str]:
    """``count`` generations with their generate-image jobs in one transaction, through the
    same SQL function and the same row/payload builder start-generation uses."""
    from psycopg.types.json import Jsonb

    from functions_compat.start_generation import build_rows
    from functions_compat.validation import Limits, parse_generation_body

    cur = env.admin.execute("select * from public.models where replicate_id = %s", (FLUX,))
    names = [d.name for d in cur.description or []]
    found = cur.fetchone()
    model = dict(zip(names, found, strict=True)) if found else {}
    body = parse_generation_body({"prompt": prompt, "model_id": FLUX}, Limits(2000, ()))
    generation, payload = build_rows(body, model)
    owners = [users[i % len(users)].id for i in range(count)]
    rows = env.admin.execute(
        "select public.create_generation(u, %s, %s, 0) ->> 'generation_id'"
        " from unnest(%s::uuid[]) with ordinality as t(u, n) order by n",
        (Jsonb(generation), Jsonb(payload), owners),
    ).fetchall()
    return [str(r[0]) for r in rows]
