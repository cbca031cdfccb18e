"""Deno processes of the local edge runtime: one ``deno run`` per function, on a 127.0.0.1 port.

Each function module (``supabase/functions/<name>/index.ts`` or any file) runs under the
shim ``serve.ts`` with the environment the hosted runtime provides (``SUPABASE_URL``,
``SUPABASE_ANON_KEY``, ``SUPABASE_SERVICE_ROLE_KEY``, ``SUPABASE_DB_URL``), ``DENO_DIR`` in
the stack's folder unless the caller gives one, and its output in
``<stack>/edge-<name>.log``. Processes start with the stack server and stop with it; a
request waits until its function listens (the first run downloads its ``npm:`` packages).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.pg import free_port

SHIM = Path(__file__).with_name("serve.ts")
START_TIMEOUT = 120.0  # a cold DENO_DIR downloads supabase-js and its dependencies


# What a function inherits from the stack's own environment: how this machine reaches the
# npm registry (proxies, CA bundles) and where things are, never a project setting or key.
PASSED_THROUGH = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "DENO_CERT",
        "DENO_TLS_CA_STORE",
        "NPM_CONFIG_REGISTRY",
        "NODE_EXTRA_CA_CERTS",
    }
)


def machine_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key in PASSED_THROUGH or key.lower() in ("http_proxy", "https_proxy", "no_proxy")
    }


class EdgeBootError(Exception):
    """A function's Deno process did not start listening (see its log)."""


def parse_functions(spec: str, base: Path) -> dict[str, Path]:
    """``"start-generation,legacy=tests/x.ts"`` -> name -> module path. A bare name is
    ``<base>/<name>/index.ts``; relative paths are taken from the current directory."""
    found: dict[str, Path] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, path = item.partition("=")
        name = name.strip()
        if not name or "/" in name:
            raise ValueError(f"invalid edge function name {name!r}")
        module = Path(path.strip()) if path.strip() else base / name / "index.ts"
        found[name] = module.resolve()
    return found


@dataclass
class DenoFunction:
    name: str
    module: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, deno: str, env: Mapping[str, str], log_dir: Path) -> None:
        if not self.module.is_file():
            raise EdgeBootError(f"{self.name}: {self.module} does not exist")
        self.log_path = log_dir / f"edge-{self.name}.log"
        child_env = {
            **env,
            "DEVSTACK_EDGE_PORT": str(self.port),
            "DEVSTACK_EDGE_MAIN": self.module.as_uri(),
            "NO_COLOR": "1",
        }
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                deno,
                "run",
                "--no-prompt",
                "--allow-net",
                "--allow-env",
                "--allow-read",
                str(SHIM),
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the function accepts connections; EdgeBootError if it exited."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process is None or self.process.returncode is not None:
                raise EdgeBootError(f"{self.name}: the Deno process exited; see {self.log_path}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise EdgeBootError(
                        f"{self.name}: not listening after {timeout:g}s; see {self.log_path}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()


class EdgeRuntime:
    """The Deno functions of one stack, started and stopped together."""

    def __init__(
        self,
        functions: Mapping[str, Path],
        *,
        deno: str,
        env: Mapping[str, str],
        log_dir: Path,
        deno_dir: Path,
    ) -> None:
        self.functions = {name: DenoFunction(name, path) for name, path in functions.items()}
        self.deno = deno
        self.env = dict(env)
        self.log_dir = log_dir
        self.deno_dir = deno_dir
        self._ready: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def find_deno(explicit: str | None = None) -> str:
        deno = explicit or os.environ.get("DEVSTACK_DENO") or shutil.which("deno")
        if not deno:
            raise EdgeBootError("deno not found: set DEVSTACK_DENO or put deno on PATH")
        return deno

    def serves(self, name: str) -> bool:
        return name in self.functions

    async def start(self) -> None:
        self.deno_dir.mkdir(parents=True, exist_ok=True)
        # Trust the system's CA store too (a TLS-inspecting proxy's CA lives there), as npm
        # and pip on this machine do; DENO_TLS_CA_STORE from the environment wins.
        env = {
            "DENO_TLS_CA_STORE": "mozilla,system",
            **machine_env(),
            "DENO_DIR": str(self.deno_dir),
            **self.env,
        }
        for function in self.functions.values():
            await function.start(self.deno, env, self.log_dir)
            self._ready[function.name] = asyncio.create_task(function.wait_ready())

    async def target(self, name: str) -> str:
        """The base URL of a running function (waits for it to listen)."""
        await asyncio.shield(self._ready[name])
        return self.functions[name].url

    async def stop(self) -> None:
        for task in self._ready.values():
            task.cancel()
        for function in self.functions.values():
            await function.stop()
