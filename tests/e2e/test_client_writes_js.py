"""The existing clients' own writes (issue 11 point 8), exactly as listed, through
supabase-js on Node (tests/js/client_writes.mjs) against the stack and the daemon: each
succeeds and has its full effect, observed through Realtime and the rows; the mobile app's
cancel of a running generation stops its job and, with the daemon running, its prediction.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.stack.realtime_support import node_available
from tests.support import Fake, NodeScript, running_worker, wait_until

pytestmark = [
    pytest.mark.js,
    pytest.mark.timeout(180),
    pytest.mark.usefixtures("quiet_queue"),
    pytest.mark.skipif(not node_available(), reason="needs node and tests/js/node_modules"),
]

EXPECTED_CHECKS = 10


def test_the_clients_own_writes_through_supabase_js(
    stack_state: StackState, fake: Fake, admin_conn: psycopg.Connection, log_dir: Path
) -> None:
    env = stack_state.env()
    client = NodeScript("client_writes.mjs", {
        "SUPABASE_URL": env["SUPABASE_URL"], "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
        "SUPABASE_SERVICE_ROLE_KEY": env["SUPABASE_SERVICE_ROLE_KEY"],
    })
    try:
        client.wait_event("need_worker", timeout=60)
        with running_worker(stack_state, log_dir, WORKER_HEARTBEAT_INTERVAL=0.5,
                            WORKER_LEASE_SECONDS=10) as worker:
            client.go()
            code, doc = client.result(timeout=150)
            failed = [c for c in doc["checks"] if not c["ok"]]
            assert code == 0 and not failed, json.dumps(failed or doc, indent=2)[-6000:]
            gid = doc["ids"]["cancelled_running"]
            wait_until(lambda: worker.actions("job.cancelled"), 20,
                       message="the running job stopped at its heartbeat")
    finally:
        client.close()
    names = [c["name"] for c in doc["checks"]]
    assert len(names) == EXPECTED_CHECKS == len(set(names)), names

    # The cancelled running generation's prediction was cancelled at the provider, and
    # nothing was stored for it.
    row = admin_conn.execute(
        "select status, replicate_prediction_id from public.image_generations where id = %s",
        (gid,)).fetchone()
    assert row is not None and row[0] == "cancelled"
    stats = fake.stats()
    assert stats["cancels"] >= 1, stats
    if row[1]:  # the worker clears the id once the cancel went through
        got = httpx.get(f"{stack_state.replicate_url}/predictions/{row[1]}",
                        headers={"Authorization": "Bearer r8_local_fake_token"}, timeout=10)
        assert got.json()["status"] == "canceled"
    assert admin_conn.execute("select count(*) from public.images where generation_id = %s",
                              (gid,)).fetchone() == (0,)
    # The legacy generate-image ran the catalogue's sdxl version and stored one image.
    legacy = doc["ids"]["legacy_generated"]
    image = admin_conn.execute("select count(*) from public.images where generation_id = %s",
                               (legacy,)).fetchone()
    assert image == (1,)
