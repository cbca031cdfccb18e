"""Issue 11 points 1-3 through the project's own doors: start-generation and the legacy
generate-image (cancel_generation: test_rest_attacks.py). Each attack gets a clear 4xx
(``{"error": ...}``), and nothing is stored or paid."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.functions.conftest import User
from tests.security.conftest import (
    FLUX,
    LEGACY_ROW,
    SDXL,
    SDXL_VERSION,
    Ledger,
    Rest,
    secrets,
    victim_generation,
)


def _post(fn_base: str, name: str, user: User, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{fn_base}/{name}", timeout=60, json=body,
                      headers={"Authorization": f"Bearer {user.token}"})


def _assert_error(response: httpx.Response, status: int, mentions: str,
                  state: StackState) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert mentions.lower() in error.lower(), error
    assert "Traceback" not in response.text
    for secret in secrets(state):
        assert secret not in response.text


START: dict[str, tuple[dict[str, Any], int, str]] = {
    "another model's version": (
        {"prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION}, 400, "model_version"),
    "an attacker's model as the version": (
        {"prompt": "p", "model_id": SDXL, "model_version": "attacker/model:" + "0" * 64}, 400,
        "model_version"),
    "a model outside the catalogue": (
        {"prompt": "p", "model_id": "attacker/model"}, 400, "Unknown model"),
    "an enormous image": ({"prompt": "p", "model_id": FLUX, "width": 100_000}, 400, "width"),
    "a prompt past the cap": ({"prompt": "x" * 5000, "model_id": FLUX}, 400, "too long"),
}


@pytest.mark.parametrize("name", sorted(START))
def test_start_generation_refuses(name: str, fn_base: str, attacker: User, ledger: Ledger,
                                  stack_state: StackState) -> None:
    body, status, mentions = START[name]
    before, paid = ledger.snapshot(), ledger.paid()
    _assert_error(_post(fn_base, "start-generation", attacker, body), status, mentions,
                  stack_state)
    assert ledger.snapshot() == before and ledger.paid() == paid


def test_start_generation_ignores_forged_fields(
    fn_base: str, attacker: User, victim: User, admin_conn: psycopg.Connection
) -> None:
    """Unknown fields are ignored (SPEC 5): none of them reaches the row or the job."""
    forged = {"user_id": victim.id, "status": "completed", "replicate_prediction_id": "p-victim",
              "job_id": str(uuid.uuid4()), "updated_at": "2000-01-01T00:00:00Z",
              "generation_time_seconds": 1}
    response = _post(fn_base, "start-generation", attacker,
                     {"prompt": "p", "model_id": FLUX, **forged})
    assert response.status_code == 200, response.text
    gid, job_id = response.json()["generation_id"], response.json()["job_id"]
    row = admin_conn.execute(
        "select user_id::text, status, replicate_prediction_id, job_id::text,"
        " generation_time_seconds, updated_at > now() - interval '1 minute'"
        " from public.image_generations where id = %s", (gid,)).fetchone()
    assert row == (attacker.id, "queued", None, job_id, None, True)
    payload = admin_conn.execute("select payload from public.job_queue where id = %s",
                                 (job_id,)).fetchone()
    assert payload is not None and payload[0]["user_id"] == attacker.id


def _own_pending(stack_state: StackState, user: User) -> str:
    created = Rest(stack_state, user.token).request(
        "POST", "image_generations", json_body={"user_id": user.id, **LEGACY_ROW})
    assert created.status_code == 201, created.text
    return str(created.json()[0]["id"])


GENERATE: dict[str, tuple[Callable[[StackState, User, str], dict[str, Any]], int, str]] = {
    "the victim's generation": (
        lambda st, u, victim_gen: {"prompt": "p", "model_id": FLUX, "generation_id": victim_gen},
        400, "not found"),
    "its own row with another model's version": (
        lambda st, u, _: {"prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION,
                          "generation_id": _own_pending(st, u)}, 400, "model_version"),
    "its own row with a model outside the catalogue": (
        lambda st, u, _: {"prompt": "p", "model_id": "attacker/model",
                          "generation_id": _own_pending(st, u)}, 400, "Unknown model"),
    "no row, another model's version": (
        lambda st, u, _: {"prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION},
        400, "model_version"),
}


@pytest.mark.parametrize("name", sorted(GENERATE))
def test_generate_image_refuses(name: str, fn_base: str, attacker: User, victim: User,
                                ledger: Ledger, stack_state: StackState,
                                admin_conn: psycopg.Connection) -> None:
    victim_gen = victim_generation(admin_conn, victim, "completed")
    build, status, mentions = GENERATE[name]
    body = build(stack_state, attacker, victim_gen)
    before, paid = ledger.snapshot(), ledger.paid()
    response = _post(fn_base, "generate-image", attacker, body)
    _assert_error(response, status, mentions, stack_state)
    assert "secret prompt" not in response.text
    assert ledger.snapshot() == before and ledger.paid() == paid
