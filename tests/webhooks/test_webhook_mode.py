"""The daemon in webhook mode on the local stack: throughput, lost and repeated deliveries,
failures, the safety net, and a polling worker sharing the queue."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture, running_worker, wait_until

pytestmark = pytest.mark.usefixtures("quiet_queue", "no_in_flight_limit")

DONE = ("completed", "failed", "cancelled")


def _wait_all(picture: Picture, gids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    finished: dict[str, dict[str, Any]] = {}

    def all_done() -> bool:
        for gid in gids:
            if gid not in finished:
                gen = picture.generation(gid)
                if gen["status"] in DONE:
                    finished[gid] = gen
        return len(finished) == len(gids)

    wait_until(all_done, timeout, interval=0.2, message=f"{len(gids)} generations finished")
    return finished


def _assert_one_image_each(conn: psycopg.Connection, gens: dict[str, dict[str, Any]]) -> None:
    for gen in gens.values():
        assert gen["status"] == "completed", gen
        assert len(gen["images"]) == 1, gen
    rows = conn.execute(
        "select g.id::text, (select count(*) from public.images i where i.generation_id = g.id),"
        " (select count(*) from storage.objects o where o.bucket_id = 'generated-images'"
        "   and o.name like '%%' || g.id::text || '%%')"
        " from public.image_generations g where g.id = any(%s::uuid[])",
        (list(gens),),
    ).fetchall()
    assert len(rows) == len(gens)
    assert {(r[1], r[2]) for r in rows} == {(1, 1)}, rows


def _jobs_of_type(
    conn: psycopg.Connection, job_type: str, gens: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The jobs of ``job_type`` that serve these generations (other tests' leftovers in the
    session's database are not counted)."""
    pids = [g["replicate_prediction_id"] for g in gens.values() if g["replicate_prediction_id"]]
    cur = conn.execute(
        "select id, status, attempt_number, payload, result, locked_by, error_message"
        " from public.job_queue where job_type = %s"
        " and (payload ->> 'generation_id' = any(%s) or payload ->> 'prediction_id' = any(%s))"
        " order by created_at",
        (job_type, list(gens), pids),
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_thirty_generations_of_five_seconds_finish_far_below_the_polling_bound(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=5.0)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, WORKER_CONCURRENCY=3, **webhook_env) as worker:
        worker.wait_subscribed()
        began = time.monotonic()
        gids = [picture.submit(user, f"webhook throughput {i}")[0] for i in range(30)]
        gens = _wait_all(picture, gids, timeout=60)
        elapsed = time.monotonic() - began
    bound = 30 * 5.0 / 3
    print(
        f"\n30 generations x 5 s, 3 threads, webhook mode: {elapsed:.1f} s (polling bound {bound:.0f} s)"
    )
    assert elapsed < 25.0, elapsed
    _assert_one_image_each(admin_conn, gens)
    generate = _jobs_of_type(admin_conn, "generate-image", gens)
    assert len(generate) == 30
    assert all(j["status"] == "completed" and j["result"]["mode"] == "webhook" for j in generate)
    hooks = _jobs_of_type(admin_conn, "process-webhook", gens)
    assert len(hooks) == 30 and all(j["status"] == "completed" for j in hooks)
    assert fake.stats()["webhooks"]["sent"] >= 30
    assert all(float(g["generation_time_seconds"]) >= 4.5 for g in gens.values())
    assert worker.actions("prediction.webhook")


def test_duplicated_and_dropped_deliveries_still_give_one_image_per_generation(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    fake.configure(
        latency_seconds=0.5,
        webhook_duplicate_rate=0.5,
        webhook_drop_rate=0.3,
        random_seed=11,
    )
    user = picture.create_user()
    with running_worker(
        stack_state, log_dir, WORKER_WEBHOOK_CHECK_AFTER=2, **webhook_env
    ) as worker:
        gids = [picture.submit(user, f"lossy webhooks {i}")[0] for i in range(20)]
        gens = _wait_all(picture, gids, timeout=90)
    # Every replay was refused on each of the fake's attempts (409), never enqueued.
    hooks = wait_until(
        lambda: (h := fake.stats()["webhooks"])["gave_up"] == h["duplicated"] and h,
        10,
        message="the fake's retries of duplicates",
    )
    assert hooks["dropped"] >= 1 and hooks["duplicated"] >= 1, hooks
    _assert_one_image_each(admin_conn, gens)
    pids = [g["replicate_prediction_id"] for g in gens.values()]
    recorded = admin_conn.execute(
        "select count(*) from public.webhook_deliveries where prediction_id = any(%s)", (pids,)
    ).fetchone()
    assert recorded is not None and recorded[0] == hooks["sent"] == 20 - hooks["dropped"]
    jobs = _jobs_of_type(admin_conn, "process-webhook", gens)
    fetched = [j for j in jobs if j["payload"].get("fetch")]
    delivered = [j for j in jobs if "body" in j["payload"]]
    assert len(fetched) >= hooks["dropped"], (len(fetched), hooks)  # the safety net
    assert len(delivered) <= hooks["sent"]
    assert worker.actions("webhook.checks_enqueued")
    downloads = _jobs_of_type(admin_conn, "download-image", gens)
    assert len({j["payload"]["generation_id"] for j in downloads}) == 20


def test_the_safety_net_waits_for_a_running_prediction(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=5.0, webhook_drop_rate=1.0)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, WORKER_WEBHOOK_CHECK_AFTER=1, **webhook_env):
        gid, _ = picture.submit(user, "no webhook ever arrives")
        gen = picture.wait_status(gid, timeout=40)
    assert gen["status"] == "completed" and len(gen["images"]) == 1
    checks = _jobs_of_type(admin_conn, "process-webhook", {gid: gen})
    assert all(j["payload"]["fetch"] is True for j in checks)
    results = [j["result"] or {} for j in checks]
    running = [r for r in results if "still" in str(r.get("skipped", ""))]
    assert running, "an early check found the prediction running and left it alone"
    assert [r for r in results if r.get("download_job_id")], results
    assert fake.stats()["webhooks"]["sent"] == 0


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[nsfw] a forbidden picture", "NSFW"),
        ("[abort] never starts", "aborted"),
    ],
)
def test_a_prediction_that_ends_without_an_image_fails_the_generation_once(
    prompt: str,
    expected: str,
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=0.3)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, **webhook_env):
        gid, _ = picture.submit(user, prompt)
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "failed", gen
    assert expected.lower() in gen["error_message"].lower(), gen
    assert gen["images"] == []
    hooks = _jobs_of_type(admin_conn, "process-webhook", {gid: gen})
    # The delivery was processed, not retried: the model's failure is the generation's.
    assert [(j["status"], j["attempt_number"]) for j in hooks] == [("completed", 1)]
    assert hooks[0]["result"]["generation_status"] == "failed"
    assert _jobs_of_type(admin_conn, "download-image", {gid: gen}) == []


def test_a_prediction_canceled_at_replicate_fails_the_generation(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    import httpx

    fake.configure(latency_seconds=30.0)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, **webhook_env):
        gid, _ = picture.submit(user, "canceled from the dashboard")
        gen = wait_until(
            lambda: (g := picture.generation(gid))["replicate_prediction_id"] and g,
            20,
            message="prediction id stored",
        )
        assert gen["status"] == "processing"
        response = httpx.post(
            f"{stack_state.replicate_url}/predictions/{gen['replicate_prediction_id']}/cancel",
            headers={"Authorization": "Bearer r8_local_fake_token"},
            timeout=10,
        )
        assert response.status_code == 200
        gen = picture.wait_status(gid, timeout=20)
    assert gen["status"] == "failed"
    assert "canceled" in gen["error_message"]


def test_a_polling_worker_and_a_webhook_worker_share_the_queue(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    admin_conn: psycopg.Connection,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    fake.configure(latency_seconds=2.0)
    user = picture.create_user()
    with (
        running_worker(stack_state, log_dir, WORKER_ID="mixed-polling") as polling,
        running_worker(stack_state, log_dir, WORKER_ID="mixed-webhook", **webhook_env) as hooked,
    ):
        polling.wait_subscribed()
        hooked.wait_subscribed()
        gids = [picture.submit(user, f"mixed {i}")[0] for i in range(12)]
        gens = _wait_all(picture, gids, timeout=90)
    _assert_one_image_each(admin_conn, gens)
    generate = _jobs_of_type(admin_conn, "generate-image", gens)
    assert all(j["status"] == "completed" for j in generate)
    by_worker: dict[str, set[str]] = {}
    for job in generate:
        worker = "webhook" if job["result"].get("mode") == "webhook" else "polling"
        by_worker.setdefault(worker, set()).add(str(job["payload"]["generation_id"]))
    assert set(by_worker) == {"polling", "webhook"}, by_worker
    assert sum(len(v) for v in by_worker.values()) == 12
    hooks = _jobs_of_type(admin_conn, "process-webhook", gens)
    assert len(hooks) == len(by_worker["webhook"])  # only webhook-mode predictions report
    assert polling.actions("job.completed") and hooked.actions("job.completed")
    assert hooked.actions("prediction.webhook") and not polling.actions("prediction.webhook")


def test_a_user_cancel_in_webhook_mode_cancels_the_prediction_at_replicate(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    webhook_env: dict[str, str],
    log_dir: Path,
) -> None:
    import httpx

    fake.configure(latency_seconds=30.0)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, **webhook_env) as worker:
        gid, _ = picture.submit(user, "cancelled while no thread holds it")
        gen = wait_until(
            lambda: (g := picture.generation(gid))["replicate_prediction_id"] and g,
            20,
            message="prediction id stored",
        )
        pid = gen["replicate_prediction_id"]
        picture.db.rpc("cancel_generation", {"p_generation_id": gid}).execute()

        def canceled_at_replicate() -> bool:
            got = httpx.get(f"{stack_state.replicate_url}/predictions/{pid}",
                            headers={"Authorization": "Bearer r8_local_fake_token"}, timeout=10)
            return bool(got.json()["status"] == "canceled")

        wait_until(canceled_at_replicate, 20, message="prediction canceled at the provider")
        wait_until(lambda: worker.actions("prediction.cancelled"), 10, message="worker log")
    assert picture.generation(gid)["status"] == "cancelled"
    assert fake.stats()["cancels"] == 1
