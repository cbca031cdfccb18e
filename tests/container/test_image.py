"""The Docker image, really built and run (with podman: there is no Docker engine here).

The base image is built once from Debian's packages (docker/build-base-image.sh, cached in
podman's storage), the worker image from the project's Dockerfile. The container then runs
against the session stack on the host network and must: process a generation end to end,
report healthy through its HEALTHCHECK, and exit 0 on SIGTERM (`podman stop`) after its
shutdown log lines, all as a non-root user. The same image serves the edge-function
contracts (`functions`) and applies migrations (`migrate`).

Missing tools fail the test in CI (CI=true) and skip it elsewhere: it never passes silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from supabase import ClientOptions, create_client

from devstack.pg import free_port
from devstack.stack import StackState
from tests.support import ROOT, Fake, Picture, wait_until, worker_env

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

PODMAN = ROOT / "docker" / "podman.sh"
BASE_IMAGE = os.environ.get("PICTURE_BASE_IMAGE", "localhost/debian-python:bookworm")
IMAGE = "localhost/picture-worker:test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Passed to the container: the worker's own settings, never the host's PATH or HOME.
CONTAINER_ENV_PREFIXES = ("SUPABASE_", "REPLICATE_", "WORKER_")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"container test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (skipped outside CI; it fails in CI)")


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(PODMAN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} ... exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts (a TLS-intercepting proxy's CA included)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class BuiltImage:
    name: str
    size_bytes: int
    build_seconds: float
    base_seconds: float


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> BuiltImage:
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing:
        unavailable(
            f"{', '.join(missing)} not installed (WITH_CONTAINER=1 scripts/setup.sh installs them)"
        )
    if os.geteuid() != 0:
        unavailable("podman with runc and vfs storage runs as root here")

    started = time.monotonic()
    base = subprocess.run(
        [str(ROOT / "docker" / "build-base-image.sh"), BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert base.returncode == 0, f"base image build failed:\n{base.stdout}\n{base.stderr}"
    base_seconds = time.monotonic() - started

    build = [
        "build",
        "--format",
        "docker",
        "--layers=false",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "-t",
        IMAGE,
    ]
    bundle = ca_bundle()
    if bundle is not None:
        build += ["--secret", f"id=pip-ca,src={bundle}"]
    started = time.monotonic()
    podman(*build, ".", timeout=600)
    build_seconds = time.monotonic() - started
    podman("image", "prune", "--force", check=False)  # the previous build's image, if any

    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    built = BuiltImage(IMAGE, size, build_seconds, base_seconds)
    line = (
        f"container image {IMAGE}: {size / 1e6:.0f} MB, built in {build_seconds:.0f}s "
        f"(base image step {base_seconds:.0f}s)"
    )
    # Shown in the test run's output (the lead quotes it), not captured with the test's.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}", flush=True)
    return built


@pytest.fixture
def quiet_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    """No leftover job of another test for the container's worker to pick up."""
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")
    yield
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")


@dataclass
class Container:
    name: str

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def actions(self) -> list[str]:
        return [str(e.get("action")) for e in self.events()]

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()


@pytest.fixture
def container(image: BuiltImage, stack_state: StackState, tmp_path: Path) -> Iterator[Container]:
    env = worker_env(
        stack_state,
        WORKER_ID=f"container-{uuid.uuid4().hex[:8]}",
        WORKER_POLL_INTERVAL="1",
        WORKER_SHUTDOWN_GRACE="20",
    )
    env_file = tmp_path / "worker.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in env.items() if k.startswith(CONTAINER_ENV_PREFIXES))
    )
    env_file.chmod(0o600)
    ctr = Container(f"picture-worker-test-{uuid.uuid4().hex[:8]}")
    # The health timer needs systemd, absent here: `podman healthcheck run` triggers it.
    podman(
        "run",
        "--detach",
        "--name",
        ctr.name,
        "--network",
        "host",
        "--env-file",
        str(env_file),
        "--health-interval",
        "disable",
        image.name,
    )
    try:
        yield ctr
    finally:
        podman("rm", "--force", "--time", "0", ctr.name, check=False)


def test_the_image_runs_a_generation_reports_healthy_and_stops_cleanly(
    container: Container, stack_state: StackState, quiet_queue: None
) -> None:
    wait_until(
        lambda: "worker.started" in container.actions(),
        60,
        0.5,
        message=f"the worker to start; logs:\n{container.logs()[-3000:]}",
    )
    assert container.inspect("{{.State.Running}}") == "true"

    Fake(stack_state).reset()
    picture = Picture(stack_state)
    gid, _ = picture.submit(picture.create_user(), prompt="a lighthouse in a container")
    gen = picture.wait_status(gid, timeout=90)
    assert gen["status"] == "completed", (gen, container.logs()[-3000:])
    assert len(gen["images"]) == 1
    stored = picture.object_bytes(gen["images"][0]["storage_path"])
    assert stored.status_code == 200 and len(stored.content) > 100

    def healthy() -> bool:
        podman("healthcheck", "run", container.name, check=False)
        return container.inspect("{{.State.Health.Status}}") == "healthy"

    wait_until(healthy, 60, 1.0, message="the HEALTHCHECK to report healthy")

    started = time.monotonic()
    podman("stop", "--time", "30", container.name, timeout=60)
    stop_seconds = time.monotonic() - started
    assert container.inspect("{{.State.ExitCode}}") == "0", container.logs()[-3000:]
    assert stop_seconds < 25, f"SIGTERM ignored? stop took {stop_seconds:.1f}s"
    actions = container.actions()
    assert "worker.stopping" in actions and "worker.stopped" in actions, actions
    assert actions.index("worker.stopping") < actions.index("worker.stopped")
    stopping = next(e for e in container.events() if e.get("action") == "worker.stopping")
    assert "SIGTERM" in str(stopping.get("msg"))
    jobs = [e for e in container.events() if e.get("generation_id") == gid]
    assert jobs and all(e.get("worker_id", "").startswith("container-") for e in jobs)
    assert stack_state.keys.service_role_key not in container.logs()


def test_help_functions_and_migrate_run_from_the_image_as_non_root(
    image: BuiltImage, stack_state: StackState
) -> None:
    assert (
        podman("image", "inspect", "--format", "{{.Config.User}}", image.name).stdout.strip()
        == "10001:10001"
    )
    config = json.loads(
        podman("image", "inspect", "--format", "{{json .Config}}", image.name).stdout
    )
    assert config["Entrypoint"] == ["picture-worker"] and config["Cmd"] == ["run"]
    check = json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image.name).stdout
    )
    assert check["Test"][0] == "CMD" and "/healthz" in check["Test"][-1]

    run = ("run", "--rm", "--no-healthcheck", "--network", "host")
    helped = podman(*run, image.name, "--help")
    for command in ("run", "functions", "migrate", "status", "retry", "enqueue"):
        assert f"    {command}" in helped.stdout
    assert "--port" in podman(*run, image.name, "functions", "--help").stdout

    who = podman(*run, "--entrypoint", "id", image.name).stdout
    assert who.startswith("uid=10001(worker)"), who

    # The migrations inside the image are the project's: none is pending on the stack.
    migrated = podman(
        *run,
        "-e",
        f"DATABASE_URL={stack_state.database_url}",
        image.name,
        "migrate",
        "--dry-run",
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == "would apply 0 migration(s)"

    # The development stack is not part of the image.
    stack = podman(*run, image.name, "stack", "env", check=False)
    assert stack.returncode == 2 and "development tool" in stack.stderr


def test_the_functions_command_serves_start_generation(
    image: BuiltImage, stack_state: StackState, tmp_path: Path, quiet_queue: None
) -> None:
    port = free_port()
    env = {
        **stack_state.env(),
        "WORKER_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    env_file = tmp_path / "functions.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in env.items() if k.startswith(CONTAINER_ENV_PREFIXES))
    )
    env_file.chmod(0o600)
    ctr = Container(f"picture-functions-test-{uuid.uuid4().hex[:8]}")
    podman(
        "run",
        "--detach",
        "--name",
        ctr.name,
        "--network",
        "host",
        "--no-healthcheck",
        "--env-file",
        str(env_file),
        image.name,
        "functions",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    try:
        base = f"http://127.0.0.1:{port}/functions/v1"

        def serving() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.options(f"{base}/start-generation", timeout=1).status_code == 200
            assert ctr.inspect("{{.State.Running}}") == "true", ctr.logs()[-3000:]
            return False

        wait_until(serving, 60, 0.5, message="the functions server")
        anon = create_client(
            stack_state.url,
            stack_state.keys.anon_key,
            ClientOptions(auto_refresh_token=False, persist_session=False),
        )
        email = f"ctr-{uuid.uuid4().hex[:12]}@example.test"
        session = anon.auth.sign_up({"email": email, "password": "correct-horse-42"}).session
        assert session is not None
        response = httpx.post(
            f"{base}/start-generation",
            headers={"Authorization": f"Bearer {session.access_token}"},
            json={"prompt": "a lighthouse", "model_id": "black-forest-labs/flux-schnell"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        gid = response.json()["generation_id"]
        picture = Picture(stack_state)
        assert picture.generation(gid)["status"] == "queued"
        assert [j["status"] for j in picture.jobs_for(gid)] == ["pending"]
        picture.db.rpc("cancel_generation", {"p_generation_id": gid}).execute()

        podman("stop", "--time", "15", ctr.name, timeout=60)
        assert ctr.inspect("{{.State.ExitCode}}") == "0", ctr.logs()[-3000:]
    finally:
        podman("rm", "--force", "--time", "0", ctr.name, check=False)
