"""The original Deno start-generation's exact calls (tests/js/deno_start_generation.mjs),
through supabase-js on Node, with the user's client for the model lookup and the
service-role client for the insert, enqueue_job and the update (issue 11 acceptance).

Whatever that function answers, a generation that breaks the rules is neither stored nor
paid, the limit holds, and a forged model_version in its payload never runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.stack import StackState
from tests.functions.conftest import cancel_in_flight
from tests.security.conftest import FLUX, SDXL, SDXL_VERSION
from tests.stack.realtime_support import node_available
from tests.support import Fake, NodeScript, running_worker, wait_until

pytestmark = [
    pytest.mark.js,
    pytest.mark.timeout(180),
    pytest.mark.usefixtures("quiet_queue"),
    pytest.mark.skipif(not node_available(), reason="needs node and tests/js/node_modules"),
]

RETIRED = "test-owner/retired-for-deno"
# name -> (request body, the step that must fail or "done", the SQLSTATE underneath)
REQUESTS: dict[str, tuple[dict[str, object], str, str | None]] = {
    "valid flux": ({"prompt": "deno one", "model_id": FLUX, "width": 768}, "done", None),
    "an enormous image": ({"prompt": "p", "model_id": FLUX, "width": 100_000}, "insert", "22023"),
    "zero steps are the model's": ({"prompt": "p", "model_id": FLUX, "num_inference_steps": 0},
                                   "done", None),  # 0 || default: the original's own rule
    "too many steps": ({"prompt": "p", "model_id": FLUX, "num_inference_steps": 500}, "insert",
                       "22023"),
    "a prompt past the cap": ({"prompt": "x" * 5000, "model_id": FLUX}, "insert", "22023"),
    "a model outside the catalogue": ({"prompt": "p", "model_id": "attacker/model"}, "lookup",
                                      None),
    "a retired model": ({"prompt": "p", "model_id": RETIRED}, "insert", "22023"),
    "another model's version": ({"prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION},
                                "enqueue", "22023"),
    "an attacker's model as the version": (
        {"prompt": "p", "model_id": SDXL, "model_version": "attacker/model:" + "0" * 64},
        "enqueue", "22023"),
    "valid sdxl with the catalogue's version": (
        {"prompt": "deno two", "model_id": SDXL, "model_version": SDXL_VERSION}, "done", None),
    "valid sdxl without a version": ({"prompt": "deno three", "model_id": SDXL}, "done", None),
    "over the limit": ({"prompt": "one too many", "model_id": FLUX}, "insert", "PT429"),
}
LIMIT = 6  # 4 valid + 2 rows left pending by the refused enqueues; the last one is over it


@pytest.fixture
def retired_model(admin_conn: psycopg.Connection) -> Iterator[None]:
    admin_conn.execute("insert into public.models (name, replicate_id, is_active)"
                       " values ('Retired (deno)', %s, false)", (RETIRED,))
    yield
    admin_conn.execute("delete from public.models where replicate_id = %s", (RETIRED,))


def test_the_original_start_generation_meets_the_rules(
    stack_state: StackState, fake: Fake, admin_conn: psycopg.Connection, log_dir: Path,
    retired_model: None, limit_of: Callable[[int], None],
) -> None:
    limit_of(LIMIT)
    env = stack_state.env()
    requests = [{"name": name, "body": body} for name, (body, _, _) in REQUESTS.items()]
    node = NodeScript("deno_start_generation.mjs", {
        "SUPABASE_URL": env["SUPABASE_URL"], "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
        "SUPABASE_SERVICE_ROLE_KEY": env["SUPABASE_SERVICE_ROLE_KEY"],
        "DENO_REQUESTS": json.dumps(requests),
    })
    try:
        code, doc = node.result(timeout=90)
    finally:
        node.close()
    assert code == 0, node.diagnostics()
    user_id = doc["user_id"]
    try:
        results = {r["name"]: r for r in doc["results"]}
        for name, (_, step, sqlstate) in REQUESTS.items():
            got = results[name]
            assert got["step"] == step, (name, got)
            if sqlstate is not None:
                assert got["error"]["code"] == sqlstate, (name, got)
        # Nothing of a refused insert is stored: the user holds exactly the generations that
        # passed the insert (the valid ones, and the rows whose job was refused).
        passed_insert = [r["generation_id"] for r in doc["results"] if r.get("generation_id")]
        stored = admin_conn.execute(
            "select id::text, status from public.image_generations where user_id = %s",
            (user_id,)).fetchall()
        assert sorted(g for g, _ in stored) == sorted(passed_insert)
        assert len(stored) == LIMIT  # the limit held
        valid = [r["generation_id"] for r in doc["results"] if r["step"] == "done"]
        forged = [r["generation_id"] for r in doc["results"] if r["step"] == "enqueue"]
        assert len(valid) == 4 and len(forged) == 2

        paid = sum(fake.stats()["predictions_created"].values())
        with running_worker(stack_state, log_dir):
            for gid in valid:
                wait_until(lambda gid=gid: admin_conn.execute(
                    "select status from public.image_generations where id = %s", (gid,)
                ).fetchone()[0] == "completed", 60, message=f"{gid} completed")
        created = fake.stats()["predictions_created"]
        assert sum(created.values()) == paid + 4, created  # the forged versions never ran
        for gid in forged:  # left pending by the function, never queued, never run
            jobs = admin_conn.execute(
                "select count(*) from public.job_queue where payload ->> 'generation_id' = %s",
                (gid,)).fetchone()
            assert jobs == (0,)
        versions = admin_conn.execute(
            "select payload ->> 'model_id', payload ->> 'model_version' from public.job_queue"
            " where payload ->> 'generation_id' = any(%s) and job_type = 'generate-image'",
            (valid,)).fetchall()
        assert sorted(v for _, v in versions if v) == [SDXL_VERSION, SDXL_VERSION]
    finally:
        cancel_in_flight(admin_conn, user_id)
