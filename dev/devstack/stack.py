"""Lifecycle of a local stack: Postgres + the Supabase-compatible server + fake Replicate.

State lives in one folder (``.stack/`` in the project by default):

    state.json      ports and keys (generated once, reused by every `up`)
    pg/             the PostgreSQL data directory (pg.log beside it)
    storage/        object bytes
    server.log      the HTTP servers' log
    server.pid      pid of the detached server process
    edge-<name>.log the output of each function run under Deno (devstack.edge), deno/ its
                    DENO_DIR unless DEVSTACK_DENO_DIR names another
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.edge.runtime import parse_functions
from devstack.keys import StackKeys
from devstack.pg import PgCluster, free_port
from worker import migrate

DEFAULT_ROOT = Path(".stack")


@dataclass
class StackState:
    pg_port: int
    api_port: int
    replicate_port: int
    keys: StackKeys

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def replicate_url(self) -> str:
        return f"http://127.0.0.1:{self.replicate_port}/v1"

    @property
    def webhook_secret(self) -> str:
        """The stack's Replicate webhook signing secret (``whsec_<base64>``), derived from its
        JWT secret: stable across restarts, distinct per stack, never written anywhere."""
        digest = hmac.new(self.keys.jwt_secret.encode(), b"replicate-webhook", hashlib.sha256)
        return "whsec_" + base64.b64encode(digest.digest()).decode()

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def env(self) -> dict[str, str]:
        return {
            "SUPABASE_URL": self.url,
            "SUPABASE_ANON_KEY": self.keys.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.keys.service_role_key,
            "SUPABASE_PUBLISHABLE_KEY": self.keys.publishable_key,
            "SUPABASE_SECRET_KEY": self.keys.secret_key,
            "SUPABASE_JWT_SECRET": self.keys.jwt_secret,
            "DATABASE_URL": self.database_url,
            "REPLICATE_API_BASE_URL": self.replicate_url,
            "REPLICATE_API_TOKEN": "r8_local_fake_token",
            "REPLICATE_WEBHOOK_SECRET": self.webhook_secret,
            # The fake Replicate serves outputs over http on loopback; production allows
            # only https on replicate.delivery. This is the explicit development escape hatch.
            "WORKER_DEV_HTTP_HOSTS": f"127.0.0.1:{self.replicate_port},127.0.0.1:{self.api_port}",
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "pg_port": self.pg_port,
                "api_port": self.api_port,
                "replicate_port": self.replicate_port,
                "jwt_secret": self.keys.jwt_secret,
                "ec_private_pem": self.keys.ec_private_pem,
                "kid": self.keys.kid,
                "previous_signing_keys": [
                    {"kid": kid, "pem": pem} for kid, pem in self.keys.previous
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StackState:
        raw = json.loads(text)
        previous = tuple((k["kid"], k["pem"]) for k in raw.get("previous_signing_keys", ()))
        keys = StackKeys(raw["jwt_secret"], raw["ec_private_pem"], raw["kid"], previous)
        return cls(raw["pg_port"], raw["api_port"], raw["replicate_port"], keys)


class Stack:
    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        fast: bool = False,
        server_env: Mapping[str, str] | None = None,
        deno_functions: Mapping[str, Path] | None = None,
        deno: str | None = None,
        deno_dir: Path | None = None,
    ) -> None:
        """``server_env``: extra environment of the server process, e.g. the stack's
        switches (``DEVSTACK_MAX_ROWS=0``, see devstack.settings). ``deno_functions``
        (name -> module; default from DEVSTACK_DENO_FUNCTIONS, see devstack.edge) are served
        under Deno instead of functions_compat."""
        self.root = Path(root).resolve()
        self.fast = fast
        self.server_env = dict(server_env or {})
        if deno_functions is None:
            spec = os.environ.get("DEVSTACK_DENO_FUNCTIONS", "")
            deno_functions = parse_functions(spec, Path("supabase/functions"))
        self.deno_functions = {name: Path(p).resolve() for name, p in deno_functions.items()}
        self.deno = deno or os.environ.get("DEVSTACK_DENO") or None
        env_dir = os.environ.get("DEVSTACK_DENO_DIR")
        self.deno_dir = deno_dir or (Path(env_dir).resolve() if env_dir else None)
        self.state_file = self.root / "state.json"
        self.pid_file = self.root / "server.pid"
        self.log_file = self.root / "server.log"
        self.storage_dir = self.root / "storage"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- state ------
    def load_state(self) -> StackState | None:
        if not self.state_file.exists():
            return None
        return StackState.from_json(self.state_file.read_text())

    def state(self) -> StackState:
        st = self.load_state()
        if st is None:
            raise RuntimeError(f"no stack in {self.root}: run `picture-worker stack up` first")
        return st

    def _create_state(self) -> StackState:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        st = StackState(free_port(), free_port(), free_port(), StackKeys.generate())
        self._write_state(st)
        return st

    def _write_state(self, st: StackState) -> None:
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(st.to_json())
        scratch.chmod(0o600)
        scratch.replace(self.state_file)

    def save_keys(self, keys: StackKeys) -> None:
        """Keep rotated signing keys across restarts (the server calls this)."""
        st = self.state()
        self._write_state(StackState(st.pg_port, st.api_port, st.replicate_port, keys))

    @property
    def cluster(self) -> PgCluster:
        return PgCluster(self.root / "pg", port=self.state().pg_port, fast=self.fast)

    # -- lifecycle ------
    def up(self, log: Callable[[str], None] = lambda _m: None) -> StackState:
        st = self.load_state() or self._create_state()
        cluster = self.cluster
        fresh = not cluster.initialized
        if fresh:
            log(f"initialising PostgreSQL {cluster.version} ...")
            cluster.init()
        cluster.start()
        log(f"PostgreSQL listening on 127.0.0.1:{st.pg_port}")
        cluster.bootstrap()
        applied = migrate.apply(st.database_url, log=log)
        log(f"migrations: {len(applied)} applied")
        self.start_server()
        log(f"API on {st.url}, fake Replicate on {st.replicate_url}")
        return st

    def server_running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start_server(self, timeout: float = 30.0) -> None:
        st = self.state()
        if self.server_running() and self.healthy():
            return
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "devstack", "serve", "--root", str(self.root)]
        for name, module in self.deno_functions.items():
            command += ["--deno-function", f"{name}={module}"]
        if self.deno:
            command += ["--deno", self.deno]
        if self.deno_dir:
            command += ["--deno-dir", str(self.deno_dir)]
        with open(self.log_file, "ab") as logf:
            proc = subprocess.Popen(
                command,
                env={**os.environ, **self.server_env},
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"stack server exited with {proc.returncode}; see {self.log_file}:\n"
                    + self.log_file.read_text()[-3000:]
                )
            if self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"stack server did not answer on {st.url} within {timeout}s")

    def healthy(self) -> bool:
        st = self.load_state()
        if st is None:
            return False
        try:
            ok = httpx.get(f"{st.url}/health", timeout=1.0).status_code == 200
            ok = (
                ok and httpx.get(f"{st.replicate_url}/_fake/health", timeout=1.0).status_code == 200
            )
        except httpx.HTTPError:
            return False
        return ok

    def stop_server(self, timeout: float = 15.0) -> None:
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    break
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def down(self) -> None:
        self.stop_server()
        if self.load_state() is not None:
            self.cluster.stop()

    def reset(self) -> None:
        import shutil

        if self.load_state() is not None:
            self.down()
        shutil.rmtree(self.root, ignore_errors=True)
