"""The ORIGINAL start-generation (tests/deno/original_start_generation.ts), still deployed on
hosted projects, run under real Deno behind the gateway (issue 11 acceptance).

It trusts its input and writes with the service role, so only the database stands between
its callers and Replicate. A valid request completes end to end; a request that breaks the
rules (unknown model, forged or foreign model_version, sizes out of bounds, over the
in-flight limit) is neither stored as a runnable generation nor paid, whatever status the
function answers (its error mapping is not ours). The daemon runs meanwhile, so anything
left runnable would be claimed and sent to the fake Replicate; "paid" is measured by the
fake's create requests of any outcome (the fake refuses versions it does not know, the real
Replicate would run an attacker's model) as well as its prediction count.

These tests depend on the database's rules (issue 11's SQL side): until they are in the
migrations, the safety tests fail, by design.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import StackState
from tests.deno.support import SCHNELL, SDXL, call, new_user
from tests.support import Fake, Picture, running_worker, wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("quiet_queue")]

ORIGINAL = "original-start-generation"
LIVE = ("pending", "queued", "processing", "downloading")


CREATES = ("POST /v1/models/{owner}/{name}/predictions", "POST /v1/predictions")


def _predictions(fake: Fake) -> tuple[int, int]:
    """(predictions created, create requests of any outcome): a request the fake refuses,
    say for an attacker's version it does not know, is one the real Replicate would run."""
    stats = fake.stats()
    created = sum(int(n) for n in stats["predictions_created"].values())
    attempts = sum(int(n) for key in CREATES for n in stats["requests"].get(key, {}).values())
    return created, attempts


def _rows(conn: psycopg.Connection, prompt: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select id, status, error_message from public.image_generations where prompt = %s",
        (prompt,),
    ).fetchall()


def _live_jobs(conn: psycopg.Connection, prompt: str) -> int:
    row = conn.execute(
        "select count(*) from public.job_queue where payload ->> 'prompt' = %s"
        " and status in ('pending', 'processing')",
        (prompt,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _catalogue_version(conn: psycopg.Connection, model_id: str) -> str:
    row = conn.execute(
        "select version from public.models where replicate_id = %s", (model_id,)
    ).fetchone()
    assert row is not None and row[0], f"{model_id} has no catalogue version"
    return str(row[0])


def test_a_valid_request_completes_end_to_end(
    stack_state: StackState, picture: Picture, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.2)
    user, token = new_user(picture, stack_state)
    body = {"prompt": "original: a harbour at night", "model_id": SCHNELL, "width": 1024,
            "height": 768}
    with running_worker(stack_state, log_dir):
        response = call(stack_state, ORIGINAL, token, body)
        assert response.status_code == 200, response.text
        started = response.json()
        assert started["success"] is True and started["status"] == "queued", started
        gen = picture.wait_status(started["generation_id"], timeout=60)
    assert gen["status"] == "completed", gen
    assert gen["user_id"] == user and gen["model"] == "FLUX Schnell"
    assert len(gen["images"]) == 1 and gen["images"][0]["user_id"] == user
    assert picture.object_bytes(gen["images"][0]["storage_path"]).status_code == 200


def _bad_bodies(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    forged = "attacker/model:" + "ab" * 32
    return {
        "unknown model": {"model_id": "attacker/model"},
        "forged model_version": {"model_id": SCHNELL, "model_version": forged},
        "another model's version": {
            "model_id": SCHNELL,
            "model_version": _catalogue_version(conn, SDXL),
        },
        "catalogue model with a bare hash": {"model_id": SDXL, "model_version": "cd" * 32},
        "sides too large": {"model_id": SCHNELL, "width": 100_000, "height": 100_000},
        "sides too small": {"model_id": SCHNELL, "width": 16, "height": 16},
        "steps out of bounds": {"model_id": SCHNELL, "num_inference_steps": 100_000},
        "prompt too long": {"model_id": SCHNELL, "prompt_repeat": 50_000},
    }


@pytest.mark.parametrize(
    "case",
    ["unknown model", "forged model_version", "another model's version",
     "catalogue model with a bare hash", "sides too large", "sides too small",
     "steps out of bounds", "prompt too long"],
)
def test_a_request_breaking_the_rules_is_neither_stored_runnable_nor_paid(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    log_dir: Path,
    admin_conn: psycopg.Connection,
    case: str,
) -> None:
    fake.configure(latency_seconds=0.2)
    _user, token = new_user(picture, stack_state)
    body = dict(_bad_bodies(admin_conn)[case])
    prompt = f"original: {case} {uuid.uuid4().hex[:8]}"
    repeat = body.pop("prompt_repeat", 0)
    body["prompt"] = prompt + " x" * int(repeat)
    prompt = body["prompt"]
    before = _predictions(fake)
    with running_worker(stack_state, log_dir):
        response = call(stack_state, ORIGINAL, token, body)
        # Whatever it answered, give the daemon the time to run anything left runnable.
        wait_until(lambda: _live_jobs(admin_conn, prompt) == 0, timeout=45,
                   message=f"no live job for {case}")
        rows = _rows(admin_conn, prompt)
    assert all(status not in (*LIVE, "completed") for _id, status, _err in rows), (
        f"{case}: stored as runnable: {rows} (function answered "
        f"{response.status_code} {response.text[:200]})"
    )
    assert _predictions(fake) == before, f"{case}: a prediction was sent to Replicate"
    images = admin_conn.execute(
        "select count(*) from public.images i join public.image_generations g"
        " on g.id = i.generation_id where g.prompt = %s",
        (prompt,),
    ).fetchone()
    assert images == (0,)


def test_the_in_flight_limit_holds_through_the_original(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    log_dir: Path,
    admin_conn: psycopg.Connection,
) -> None:
    # The limit as the database applies it, measured through our own start-generation.
    probe, probe_token = new_user(picture, stack_state)
    limit = 0
    while limit < 60:
        answer = call(stack_state, "start-generation", probe_token,
                      {"prompt": f"limit probe {limit}", "model_id": SCHNELL})
        if answer.status_code == 429:
            break
        assert answer.status_code == 200, answer.text
        limit += 1
    assert 0 < limit < 60, "no in-flight limit found"
    admin_conn.execute("delete from public.job_queue where created_by = %s", (probe,))
    admin_conn.execute("delete from public.image_generations where user_id = %s", (probe,))

    # No daemon yet: everything the original gets stored stays in flight.
    user, token = new_user(picture, stack_state)
    prompts = [f"original: flood {n} {uuid.uuid4().hex[:6]}" for n in range(limit + 3)]
    for prompt in prompts:
        call(stack_state, ORIGINAL, token, {"prompt": prompt, "model_id": SCHNELL})
    live = admin_conn.execute(
        "select count(*) from public.image_generations where user_id = %s and status = any(%s)",
        (user, list(LIVE)),
    ).fetchone()
    assert live is not None
    assert live[0] <= limit, f"{live[0]} in flight, limit {limit}"

    before = _predictions(fake)
    fake.configure(latency_seconds=0.1)
    with running_worker(stack_state, log_dir):
        wait_until(
            lambda: sum(_live_jobs(admin_conn, p) for p in prompts) == 0,
            timeout=90,
            message="the flood's jobs finished",
        )
    created, attempts = _predictions(fake)
    assert created - before[0] <= limit and attempts - before[1] <= limit
