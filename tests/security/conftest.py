"""Fixtures of the security suite: signed-up users, raw REST with their JWTs, and the checks
every refused attack must pass (a clear 4xx with the database's named error, nothing
stored, nothing paid, nothing leaked).

Everything runs against the session's local stack (PostgREST-compatible /rest/v1, the
functions at /functions/v1, the fake Replicate); the users are real sign-ups.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from devstack.stack import StackState
from tests.functions.conftest import User, cancel_in_flight, sign_up
from tests.support import Fake

FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
LEGACY_ROW = {  # the legacy synchronous clients' own insert (issue 11 point 8)
    "prompt": "a red fox", "negative_prompt": None, "model": FLUX,
    "width": 1024, "height": 1024, "steps": 4, "guidance_scale": 0, "status": "pending",
}


@dataclass(frozen=True)
class Rest:
    """Raw /rest/v1 as a client sends it: the public key as apikey, a bearer token."""

    state: StackState
    token: str

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: dict[str, str] | None = None, prefer: str = "return=representation"
                ) -> httpx.Response:
        headers = {
            "apikey": self.state.keys.anon_key,
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Prefer": prefer,
        }
        return httpx.request(method, f"{self.state.url}/rest/v1/{path}", headers=headers,
                             params=params, content=None if json_body is None
                             else json.dumps(json_body, default=str), timeout=30)


@dataclass
class Ledger:
    """What the world holds: rows of the users involved, stored objects, money spent."""

    conn: psycopg.Connection
    fake: Fake
    users: list[str]

    def snapshot(self) -> dict[str, Any]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            gens = cur.execute(
                "select id, user_id, status, prompt, model, width, height, steps,"
                " replicate_prediction_id, job_id, error_message, updated_at, completed_at"
                " from public.image_generations where user_id = any(%s::uuid[]) order by id",
                (self.users,),
            ).fetchall()
            jobs = cur.execute(
                "select id, job_type, status, payload from public.job_queue"
                " where created_by = any(%s::uuid[]) or payload ->> 'user_id' = any(%s)"
                " order by id", (self.users, self.users),
            ).fetchall()
            images = cur.execute(
                "select id, generation_id from public.images where user_id = any(%s::uuid[])"
                " order by id", (self.users,),
            ).fetchall()
            objects = cur.execute(
                "select name from storage.objects where bucket_id = 'generated-images'"
                " and split_part(name, '/', 1) = any(%s) order by name", (self.users,),
            ).fetchall()
        return {"generations": gens, "jobs": jobs, "images": images, "objects": objects}

    def paid(self) -> int:
        """Predictions created at the (fake) provider so far."""
        return sum(self.fake.stats()["predictions_created"].values())

    def cancels(self) -> int:
        return int(self.fake.stats()["cancels"])


def secrets(state: StackState) -> list[str]:
    env = state.env()
    return [state.keys.service_role_key, state.keys.jwt_secret, env["REPLICATE_API_TOKEN"],
            state.webhook_secret]


def assert_refused(response: httpx.Response, status: int, code: str | None,
                   state: StackState, *, mentions: str = "") -> dict[str, Any]:
    """A clear refusal: the HTTP status, PostgREST's body with the database's SQLSTATE and a
    message (naming ``mentions``), no stack trace, no secret."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    if code is not None:
        assert body.get("code") == code, body
    message = str(body.get("message") or body.get("error") or "")
    assert message, body
    assert mentions.lower() in message.lower(), body
    assert "Traceback" not in response.text
    for secret in secrets(state):
        assert secret not in response.text
    return dict(body)


@pytest.fixture
def attacker(stack_state: StackState, admin_conn: psycopg.Connection) -> Iterator[User]:
    user = sign_up(stack_state)
    yield user
    cancel_in_flight(admin_conn, user.id)


@pytest.fixture
def victim(stack_state: StackState, admin_conn: psycopg.Connection) -> Iterator[User]:
    user = sign_up(stack_state)
    yield user
    cancel_in_flight(admin_conn, user.id)


@pytest.fixture
def fn_base(stack_state: StackState) -> str:
    """The functions as the stack serves them (the project's own doors)."""
    return f"{stack_state.url}/functions/v1"


@pytest.fixture
def ledger(admin_conn: psycopg.Connection, fake: Fake, attacker: User, victim: User) -> Ledger:
    return Ledger(admin_conn, fake, [attacker.id, victim.id])


@pytest.fixture
def as_attacker(stack_state: StackState, attacker: User) -> Rest:
    return Rest(stack_state, attacker.token)


def victim_generation(conn: psycopg.Connection, victim: User, status: str = "completed",
                      prediction: str | None = None) -> str:
    """A generation of the victim's, as the worker leaves it (seeded directly)."""
    prediction = prediction or f"victim-{uuid.uuid4().hex[:12]}"
    row = conn.execute(
        "insert into public.image_generations (user_id, prompt, model, width, height, status,"
        " replicate_prediction_id) values (%s, 'the victim''s secret prompt', %s, 1024, 1024,"
        " %s, %s) returning id::text", (victim.id, FLUX, status, prediction),
    ).fetchone()
    assert row is not None
    return str(row[0])
