"""Issue 11 points 1, 2 and 7 replayed end to end: the daemon runs, the fake Replicate bills.

- point 2: deleting one's in-flight generations (to get under the limit) stops their jobs
  and predictions: nothing runs to the end, nothing is downloaded or stored;
- point 7: a generation cancelled (or deleted) while its image is being stored keeps no
  image: the worker is held by a gate right after its Storage upload, the user cancels, the
  database refuses the images row and the worker removes the object it uploaded;
- point 1: the victim's running generation cannot be cancelled by another user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.faults.gates import INSTALL, UNINSTALL, Gates
from tests.functions.conftest import User
from tests.security.conftest import FLUX, Ledger, Rest, assert_refused, secrets
from tests.support import Fake, Picture, running_worker, wait_until
from tests.webhooks.conftest import TOKEN

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("quiet_queue")]

FAST_HEARTBEAT = {"WORKER_HEARTBEAT_INTERVAL": 0.5, "WORKER_LEASE_SECONDS": 10}


@pytest.fixture
def gates(stack_state: StackState) -> Iterator[Gates]:
    dsn = f"host=127.0.0.1 port={stack_state.pg_port} user=supabase_admin dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSTALL)
        gate = Gates(conn)
        try:
            yield gate
        finally:
            gate.release()
            conn.execute(UNINSTALL)


def start(fn_base: str, user: User, prompt: str) -> str:
    response = httpx.post(f"{fn_base}/start-generation", timeout=30,
                          headers={"Authorization": f"Bearer {user.token}"},
                          json={"prompt": prompt, "model_id": FLUX})
    assert response.status_code == 200, response.text
    return str(response.json()["generation_id"])


def prediction_status(state: StackState, pid: str) -> str:
    got = httpx.get(f"{state.replicate_url}/predictions/{pid}",
                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    return str(got.json()["status"])


def stored_objects(conn: psycopg.Connection, gid: str) -> list[str]:
    rows = conn.execute("select name from storage.objects where bucket_id = 'generated-images'"
                        " and name like %s", (f"%/{gid}.%",)).fetchall()
    return [str(r[0]) for r in rows]


def webhook_env(state: StackState) -> dict[str, str]:
    return {"WORKER_WEBHOOK_URL": f"{state.url}/functions/v1/replicate-webhook",
            "REPLICATE_WEBHOOK_SECRET": state.webhook_secret}


# -- point 2 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["polling", "webhook"])
def test_deleting_in_flight_generations_stops_their_predictions(
    mode: str, stack_state: StackState, attacker: User, fake: Fake, ledger: Ledger,
    admin_conn: psycopg.Connection, log_dir: Path, fn_base: str,
    limit_of: Callable[[int], None],
) -> None:
    limit_of(2)
    fake.configure(webhook_secret=stack_state.webhook_secret)
    env = {**FAST_HEARTBEAT, **(webhook_env(stack_state) if mode == "webhook" else {})}
    rest = Rest(stack_state, attacker.token)
    with running_worker(stack_state, log_dir, **env) as worker:
        gids = [start(fn_base, attacker, f"[slow:60] expensive {i}") for i in range(2)]
        over = httpx.post(f"{fn_base}/start-generation", timeout=30,
                          headers={"Authorization": f"Bearer {attacker.token}"},
                          json={"prompt": "a third", "model_id": FLUX})
        assert over.status_code == 429
        pids = [
            wait_until(lambda gid=gid: admin_conn.execute(
                "select replicate_prediction_id from public.image_generations where id = %s",
                (gid,)).fetchone()[0], 30, message="prediction created")
            for gid in gids
        ]
        paid = ledger.paid()
        for gid in gids:  # the attack: delete the rows to get under the limit
            deleted = rest.request("DELETE", "image_generations", params={"id": f"eq.{gid}"})
            assert deleted.status_code == 200 and len(deleted.json()) == 1, deleted.text
        for pid in pids:
            wait_until(lambda pid=pid: prediction_status(stack_state, pid) == "canceled", 30,
                       message=f"prediction {pid} canceled at the provider")
        assert ledger.cancels() == 2
        if mode == "polling":
            wait_until(lambda: len(worker.actions("job.cancelled")) >= 2, 15,
                       message="the running jobs stopped at their heartbeat")
        # The limit now counts only what really runs: two new ones fit, a third does not.
        new = [start(fn_base, attacker, f"after the delete {i}") for i in range(2)]
        assert httpx.post(f"{fn_base}/start-generation", timeout=30,
                          headers={"Authorization": f"Bearer {attacker.token}"},
                          json={"prompt": "p", "model_id": FLUX}).status_code == 429
        for gid in new:
            wait_until(lambda gid=gid: admin_conn.execute(
                "select status from public.image_generations where id = %s", (gid,)
            ).fetchone()[0] == "completed", 60, message="the new generations complete")
    assert ledger.paid() == paid + 2  # the two new ones; nothing for the deleted ones
    log = worker.log_text()
    assert all(secret not in log for secret in secrets(stack_state))
    for gid in gids:
        jobs = admin_conn.execute(
            "select job_type, status from public.job_queue where payload ->> 'generation_id' = %s",
            (gid,)).fetchall()
        # Polling: the running job was cancelled. Webhook mode: the job had already
        # completed (the prediction ran with no job holding it) and a process-webhook job
        # cancelled the prediction at the provider.
        assert {status for _, status in jobs} <= {"cancelled", "completed"}, jobs
        assert "download-image" not in {job_type for job_type, _ in jobs}
        assert stored_objects(admin_conn, gid) == []


# -- point 7 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["cancel", "delete", "cancel_generation"])
def test_giving_up_while_the_image_is_stored_keeps_no_image(
    how: str, stack_state: StackState, attacker: User, fake: Fake, gates: Gates,
    admin_conn: psycopg.Connection, log_dir: Path, fn_base: str,
) -> None:
    rest = Rest(stack_state, attacker.token)
    gid = start(fn_base, attacker, "a harbour at night")
    gates.arm("image_insert", gid)  # the worker waits right after its Storage upload
    with running_worker(stack_state, log_dir, **FAST_HEARTBEAT) as worker:
        pid = gates.wait_held(60)
        assert stored_objects(admin_conn, gid), "the upload happened before the gate"
        status = admin_conn.execute("select status from public.image_generations where id = %s",
                                    (gid,)).fetchone()
        assert status is not None and status[0] == "downloading"
        if how == "cancel":  # the apps' own cancel
            answer = rest.request("PATCH", "image_generations", json_body={"status": "cancelled"},
                                  params={"id": f"eq.{gid}"})
        elif how == "delete":
            answer = rest.request("DELETE", "image_generations", params={"id": f"eq.{gid}"})
        else:
            answer = rest.request("POST", "rpc/cancel_generation",
                                  json_body={"p_generation_id": gid})
        assert answer.status_code == 200, answer.text
        assert pid == gates.waiting_pid()  # the worker is still held
        gates.release()
        wait_until(lambda: worker.actions("image.discarded"), 20,
                   message="the worker discarded the image")
    assert admin_conn.execute("select count(*) from public.images where generation_id = %s",
                              (gid,)).fetchone() == (0,)
    assert stored_objects(admin_conn, gid) == []
    remaining = admin_conn.execute(
        "select status from public.image_generations where id = %s", (gid,)).fetchone()
    assert remaining is None if how == "delete" else remaining == ("cancelled",)
    public = httpx.get(f"{stack_state.url}/storage/v1/object/public/generated-images/"
                       f"{attacker.id}/{gid}.webp", timeout=10)
    assert public.status_code in (400, 404), public.status_code
    log = worker.log_text()
    assert all(secret not in log for secret in secrets(stack_state))


# -- point 1 ------------------------------------------------------------------------------------
def test_another_user_cannot_stop_the_victims_generation(
    stack_state: StackState, attacker: User, victim: User, fake: Fake, ledger: Ledger,
    admin_conn: psycopg.Connection, log_dir: Path, fn_base: str,
) -> None:
    rest = Rest(stack_state, attacker.token)
    with running_worker(stack_state, log_dir, **FAST_HEARTBEAT):
        gid = start(fn_base, victim, "[slow:3] the victim's picture")
        wait_until(lambda: admin_conn.execute(
            "select replicate_prediction_id from public.image_generations where id = %s",
            (gid,)).fetchone()[0], 30, message="prediction created")
        refused = rest.request("POST", "rpc/cancel_generation", json_body={"p_generation_id": gid})
        assert_refused(refused, 404, "PT404", stack_state, mentions="not found")
        for method, body in (("PATCH", {"status": "cancelled"}), ("DELETE", None)):
            answer = rest.request(method, "image_generations", json_body=body,
                                  params={"id": f"eq.{gid}"})
            assert answer.status_code == 200 and answer.json() == []
        done = Picture(stack_state).wait_status(gid, timeout=60)
    assert done["status"] == "completed" and len(done["images"]) == 1
    assert ledger.cancels() == 0
