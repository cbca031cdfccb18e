"""Fixtures of the functions_compat tests (all against the session's real local stack).

- ``fn``: the app as the stack mounts it (``{stack.url}/functions/v1/<name>``, same process
  as /rest/v1 and /auth/v1, configured by ``StackState.env()``).
- ``standalone``: the app served on its own by ``picture-worker functions`` (a subprocess)
  with the worker settings process-jobs needs against the local stack
  (``WORKER_DEV_HTTP_HOSTS`` = the fake Replicate's and the stack's host:port).
- ``user``: a user signed up through /auth/v1 with supabase-py; on teardown whatever the user
  left in flight is cancelled so later tests start from a quiet queue.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from supabase import Client, ClientOptions, create_client

from devstack.pg import free_port
from devstack.stack import StackState
from tests.support import ROOT, worker_env

PASSWORD = "correct-horse-battery-42"
FLUX = "black-forest-labs/flux-schnell"


@dataclass
class User:
    id: str
    email: str
    token: str
    client: Client  # signed in: its functions/rest calls carry the user's JWT


@dataclass(frozen=True)
class Functions:
    """One served instance of the app."""

    base: str  # .../functions/v1

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def post(
        self, name: str, token: str | None = None, *, timeout: float = 30.0, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(self.url(name), headers=headers, timeout=timeout, **kwargs)


def sign_up(state: StackState) -> User:
    client = create_client(
        state.url,
        state.keys.anon_key,
        ClientOptions(auto_refresh_token=False, persist_session=False),
    )
    email = f"fn-{uuid.uuid4().hex[:12]}@example.test"
    res = client.auth.sign_up({"email": email, "password": PASSWORD})
    assert res.session is not None and res.user is not None, "sign-up returned no session"
    return User(str(res.user.id), email, res.session.access_token, client)


def cancel_in_flight(conn: psycopg.Connection, user_id: str) -> None:
    conn.execute(
        "update public.job_queue set status = 'cancelled', locked_until = null"
        " where created_by = %s and status in ('pending', 'processing')",
        (user_id,),
    )
    conn.execute(
        "update public.image_generations set status = 'cancelled'"
        " where user_id = %s and status in ('pending', 'queued', 'processing', 'downloading')",
        (user_id,),
    )


def counts(conn: psycopg.Connection, user_id: str) -> tuple[int, int]:
    """(image_generations, job_queue) rows of a user."""
    row = conn.execute(
        "select (select count(*) from public.image_generations where user_id = %s),"
        " (select count(*) from public.job_queue where created_by = %s"
        "    or payload ->> 'user_id' = %s::text)",
        (user_id, user_id, user_id),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.fixture(scope="session")
def fn(stack_state: StackState) -> Functions:
    return Functions(f"{stack_state.url}/functions/v1")


@pytest.fixture
def user(stack_state: StackState, admin_conn: psycopg.Connection) -> Iterator[User]:
    u = sign_up(stack_state)
    yield u
    cancel_in_flight(admin_conn, u.id)


@pytest.fixture
def other_user(stack_state: StackState, admin_conn: psycopg.Connection) -> Iterator[User]:
    u = sign_up(stack_state)
    yield u
    cancel_in_flight(admin_conn, u.id)


def functions_env(state: StackState, **overrides: str) -> dict[str, str]:
    env = worker_env(state, WORKER_LOG_FORMAT="text")
    env.update(
        {
            "FUNCTIONS_GENERATE_TIMEOUT": "60",
            "WORKER_HEARTBEAT_INTERVAL": "2",
        }
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def serve_functions(
    state: StackState, log_path: Path, **overrides: str
) -> Iterator[Functions]:
    """``picture-worker functions`` as a subprocess on a free loopback port."""
    port = free_port()
    env = functions_env(state, **overrides)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "functions", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/functions/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"functions server exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.options(f"{base}/start-generation", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("functions server did not start:\n" + log_path.read_text())
            time.sleep(0.1)
        yield Functions(base)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def standalone(
    stack_state: StackState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Functions]:
    log_path = tmp_path_factory.mktemp("functions") / "functions.log"
    with serve_functions(stack_state, log_path) as served:
        yield served


# -- assertions and fixtures shared by the contract tests ------
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
}
def assert_cors(response: httpx.Response) -> None:
    for name, value in CORS.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))


def assert_error(response: httpx.Response, status: int, contains: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert contains.lower() in body["error"].lower(), body
    assert "Traceback" not in response.text
    assert_cors(response)
    return dict(body)


def row(conn: psycopg.Connection, query: str, *params: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(query.encode(), params).fetchone()
    assert found is not None, query
    return dict(found)


@pytest.fixture
def quiet_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    """process-jobs claims whatever is due: start these tests from an empty queue."""
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")
    yield
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")
