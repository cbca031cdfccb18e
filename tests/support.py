"""Helpers shared by the integration, e2e and fault tests.

- ``WorkerProcess``: the real daemon (`python -m worker run`) as a subprocess against the
  session stack, with its JSON log captured to a file.
- ``Picture``: creates users and generations the way the app does (through the stack's
  REST API with the service key: insert the row, ``enqueue_job``), and reads them back.
- ``fake``: the fake Replicate's control API.
- ``StackControl``: the stack's own control API (``/_stack``): its switches and the gateway's
  faults on demand.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from supabase import Client, ClientOptions, create_client

from devstack.pg import free_port
from devstack.stack import StackState

ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def worker_env(state: StackState, **overrides: Any) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WORKER_", "SUPABASE_", "REPLICATE_"))
    }
    env.update(state.env())
    env.update(
        {
            "WORKER_DEV_HTTP_HOSTS": f"127.0.0.1:{state.replicate_port},127.0.0.1:{state.api_port}",
            "WORKER_HEALTH_PORT": str(free_port()),
            "WORKER_HEALTH_HOST": "127.0.0.1",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_LOG_LEVEL": "INFO",
            "WORKER_POLL_INTERVAL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class WorkerProcess:
    def __init__(
        self, state: StackState, log_dir: Path, *, args: tuple[str, ...] = (), **env: Any
    ) -> None:
        self.env = worker_env(state, **env)
        self.worker_id = self.env.setdefault("WORKER_ID", f"test-{uuid.uuid4().hex[:8]}")
        self.log_path = log_dir / f"{self.worker_id}.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = int(self.env["WORKER_HEALTH_PORT"])

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def wait_ready(self, timeout: float = 20.0) -> WorkerProcess:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            return any(e.get("action") == "worker.started" for e in self.events())

        wait_until(ready, timeout, message="worker start")
        return self

    def wait_subscribed(self, timeout: float = 20.0) -> WorkerProcess:
        wait_until(
            lambda: any(e.get("action") == "realtime.subscribed" for e in self.events()),
            timeout,
            message="realtime subscription",
        )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("action") == action]

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()
        return self.proc.returncode

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text


@contextlib.contextmanager
def running_worker(state: StackState, log_dir: Path, **env: Any) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(state, log_dir, **env).start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def service_client(state: StackState) -> Client:
    return create_client(
        state.url,
        state.keys.service_role_key,
        ClientOptions(auto_refresh_token=False, persist_session=False),
    )


class Picture:
    """The app's side of the contract, driven through the stack's REST API."""

    def __init__(self, state: StackState) -> None:
        self.state = state
        self.db = service_client(state)

    def create_user(self) -> str:
        email = f"u-{uuid.uuid4().hex[:12]}@example.test"
        res = self.db.auth.admin.create_user(
            {"email": email, "password": "correct-horse-42", "email_confirm": True}
        )
        return str(res.user.id)

    def submit(
        self,
        user_id: str,
        prompt: str = "a lighthouse at dawn",
        model_id: str = "black-forest-labs/flux-schnell",
        *,
        max_attempts: int = 3,
        **extra: Any,
    ) -> tuple[str, str]:
        """A generation row + its generate-image job, as start-generation creates them."""
        model = (
            self.db.table("models").select("*").eq("replicate_id", model_id).limit(1).execute().data
        )
        row = model[0] if model else {}
        width = extra.pop("width", row.get("default_width") or 1024)
        height = extra.pop("height", row.get("default_height") or 1024)
        gen = (
            self.db.table("image_generations")
            .insert(
                {
                    "user_id": user_id,
                    "prompt": prompt,
                    "model": row.get("name") or model_id.split("/")[-1],
                    "width": width,
                    "height": height,
                    "status": "pending",
                }
            )
            .execute()
            .data[0]
        )
        payload = {
            "generation_id": gen["id"],
            "user_id": user_id,
            "prompt": prompt,
            "negative_prompt": extra.pop("negative_prompt", None),
            "model_id": model_id,
            "model_version": extra.pop("model_version", row.get("version")),
            "width": width,
            "height": height,
            "num_inference_steps": extra.pop("num_inference_steps", row.get("default_steps")),
            "guidance_scale": extra.pop("guidance_scale", row.get("default_guidance_scale")),
            "seed": extra.pop("seed", None),
            "source_image_url": extra.pop("source_image_url", None),
            "strength": extra.pop("strength", None),
            **extra,
        }
        job_id = (
            self.db.rpc(
                "enqueue_job",
                {
                    "p_job_type": "generate-image",
                    "p_payload": payload,
                    "p_max_attempts": max_attempts,
                },
            )
            .execute()
            .data
        )
        self.db.table("image_generations").update({"status": "queued", "job_id": job_id}).eq(
            "id", gen["id"]
        ).execute()
        return str(gen["id"]), str(job_id)

    def generation(self, gid: str) -> dict[str, Any]:
        return dict(
            self.db.table("image_generations")
            .select("*, images(*)")
            .eq("id", gid)
            .single()
            .execute()
            .data
        )

    def jobs_for(self, gid: str) -> list[dict[str, Any]]:
        data = (
            self.db.table("job_queue")
            .select("*")
            .eq("payload->>generation_id", gid)
            .order("created_at")
            .execute()
            .data
        )
        return [dict(r) for r in data]

    def wait_status(
        self,
        gid: str,
        statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (g := self.generation(gid))["status"] in statuses and g,
                timeout,
                interval=0.1,
                message=f"generation {gid} in {statuses}",
            )
        )

    def object_bytes(self, path: str) -> httpx.Response:
        return httpx.get(
            f"{self.state.url}/storage/v1/object/public/generated-images/{path}", timeout=10
        )


class Fake:
    """The fake Replicate's control API."""

    def __init__(self, state: StackState) -> None:
        self.base = state.replicate_url

    def reset(self) -> None:
        httpx.post(f"{self.base}/_fake/reset", timeout=5).raise_for_status()

    def configure(self, **config: Any) -> None:
        httpx.post(f"{self.base}/_fake/config", json=config, timeout=5).raise_for_status()

    def stats(self) -> Mapping[str, Any]:
        return dict(httpx.get(f"{self.base}/_fake/stats", timeout=5).json())


class StackControl:
    """The stack's control API (devstack.admin): switches and gateway faults."""

    def __init__(self, state: StackState) -> None:
        self.base = f"{state.url}/_stack"
        self.headers = {"Authorization": f"Bearer {state.keys.service_role_key}"}

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        res = httpx.request(method, f"{self.base}{path}", json=body, headers=self.headers,
                            timeout=10)
        res.raise_for_status()
        return res.json()

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Change some switches (none: read them); returns all of them."""
        return dict(self._call("POST", "/settings", changes))

    def faults(self, *rules: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
        """Replace the gateway's fault rules (see devstack.gateway.faults)."""
        return dict(self._call("POST", "/faults", {"rules": list(rules), "seed": seed}))

    def fault_counts(self) -> dict[str, Any]:
        return dict(self._call("GET", "/faults"))

    def reset_faults(self) -> dict[str, Any]:
        """Remove every rule; returns the counts they reached."""
        return dict(self._call("DELETE", "/faults"))


class NodeScript:
    """``node tests/js/<script>`` with JSON progress lines on stderr read as they arrive,
    a line on stdin to let it go on, and one JSON document on stdout at the end."""

    def __init__(self, script: str, env: Mapping[str, str]) -> None:
        import queue
        import threading

        base = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
        self.proc = subprocess.Popen(
            ["node", str(ROOT / "tests" / "js" / script)],
            cwd=ROOT / "tests" / "js",
            env={**base, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, progress: bool) -> None:
        for line in stream:
            (self.stderr if progress else self.stdout).append(line)
            if progress:
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        self.events.put(doc)

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"node exited early: {self.diagnostics()}") from None
                continue
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} from node within {timeout}s: {self.diagnostics()}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> tuple[int, dict[str, Any]]:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        text = "".join(self.stdout).strip()
        try:
            doc = json.loads(text.splitlines()[-1]) if text else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise AssertionError(f"node printed no JSON document: {self.diagnostics()}")
        return code, doc

    def diagnostics(self) -> str:
        return f"stdout={''.join(self.stdout)[-4000:]!r} stderr={''.join(self.stderr)[-3000:]!r}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
