"""No secret in any log line, at DEBUG, through successes, failures, 401s, Realtime drops and
a refused service key.

Keys: the session stack's service_role JWT (signed with the stack's random secret), a
distinctive Replicate token the fake accepts, a distinctive token it rejects (401), and a
service key signed with another secret (Supabase rejects it). The raw log text of every
worker is searched for each key and for its distinctive parts.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from devstack.keys import StackKeys
from devstack.stack import StackState
from tests.faults.checks import facts, wait_terminal
from tests.faults.conftest import Workers
from tests.support import Fake, Picture, WorkerProcess, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")]


def _fragments(secret: str) -> list[str]:
    """The secret, its distinctive parts, and every 16-character window of them."""
    if secret.count(".") == 2:  # a JWT: the signature is what no one else has
        parts = [secret.split(".")[2], secret.split(".")[1]]
    else:
        parts = [secret.split("_", 1)[1]]
    windows = {p[i:i + 16] for p in parts for i in range(0, max(1, len(p) - 15))}
    return [secret, *parts, *sorted(windows)]


def _leaks(text: str, secrets: dict[str, str]) -> dict[str, str]:
    found = {}
    for name, secret in secrets.items():
        for fragment in _fragments(secret):
            if fragment in text:
                at = text.index(fragment)
                found[name] = text[max(0, at - 200):at + 60]
                break
    return found


def _drop_realtime(state: StackState) -> None:
    httpx.post(
        f"{state.url}/_stack/realtime/drop",
        params={"pause": 1},
        headers={"Authorization": f"Bearer {state.keys.service_role_key}"},
        timeout=5,
    ).raise_for_status()


@pytest.mark.timeout(120)
def test_no_secret_reaches_any_log_line(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    workers: Workers,
    admin_conn: psycopg.Connection,
) -> None:
    token = f"r8_FaultSuiteSecret{uuid.uuid4().hex}"
    rejected = f"r9_FaultSuiteRejected{uuid.uuid4().hex}"  # not r8_...: the fake answers 401
    bad_service_key = StackKeys.generate().service_role_key  # well formed, wrong signature
    secrets = {
        "SUPABASE_SERVICE_ROLE_KEY": stack_state.keys.service_role_key,
        "REPLICATE_API_TOKEN": token,
        "rejected REPLICATE_API_TOKEN": rejected,
        "rejected SUPABASE_SERVICE_ROLE_KEY": bad_service_key,
    }
    fake.configure(extra_tokens=[token], latency_seconds=0.2)
    user = picture.create_user()
    debug: dict[str, Any] = {"WORKER_LOG_LEVEL": "DEBUG", "WORKER_POLL_INTERVAL": 0.5}

    # 1. A worker with a good token: a success, model failures, a 422, a Realtime drop.
    worker = workers.start(stack_state, REPLICATE_API_TOKEN=token, **debug).wait_subscribed()
    prompts = ["a calm harbour", "[fail] a model crash", "[nsfw] refused", "[422] rejected"]
    gids = [picture.submit(user, p)[0] for p in prompts]
    _drop_realtime(stack_state)
    wait_terminal(admin_conn, gids, 40)
    wait_until(lambda: len(worker.actions("realtime.subscribed")) >= 2, 20,
               message="resubscribed after the drop")
    observed = worker.metrics() + httpx.get(
        f"http://127.0.0.1:{worker.health_port}/readyz", timeout=5).text
    worker.stop()
    rows = facts(admin_conn, gids)
    assert [rows[g].status for g in gids] == ["completed", "failed", "failed", "failed"], rows

    # 2. A token Replicate rejects: the job fails permanently, naming the variable only.
    rejecting = workers.start(stack_state, REPLICATE_API_TOKEN=rejected, **debug)
    gid_401, _ = picture.submit(user, "a token the provider rejects")
    wait_terminal(admin_conn, [gid_401], 30)
    error = facts(admin_conn, [gid_401])[gid_401].error_message or ""
    assert "401" in error and "REPLICATE_API_TOKEN" in error, error
    rejecting.stop()

    # 3. A service key Supabase rejects: the start-up probe stops the worker (exit 2) with
    #    one line naming the variable, never the key (the DEBUG lines before it included).
    locked_out = workers.start(
        stack_state, ready=False, SUPABASE_SERVICE_ROLE_KEY=bad_service_key, **debug
    )
    assert locked_out.wait(30) == 2
    last = locked_out.log_text().strip().splitlines()[-1]
    assert last.startswith("picture-worker: SUPABASE_SERVICE_ROLE_KEY: the project refused"), last

    logs: dict[str, str] = {w.worker_id: w.log_text() for w in (worker, rejecting, locked_out)}
    assert any('"level": "debug"' in text for text in logs.values()), "DEBUG lines were written"
    assert any("job.failed" in text for text in logs.values())
    for worker_id, text in logs.items():
        assert not _leaks(text, secrets), f"{worker_id} leaked: {_leaks(text, secrets)}"
    assert not _leaks(observed, secrets), "/metrics or /readyz shows a secret"
    for w in (worker, rejecting):
        assert isinstance(w, WorkerProcess) and w.proc is not None and w.proc.returncode == 0
