"""request_generation(p_request): start-generation as one RPC the signed-in user calls with
their own JWT (the hosted Deno edge function's door; functions_compat's too)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.db.dbkit import FLUX, Database, named_call

SDXL = "stability-ai/sdxl"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def _request(db: Database, user: uuid.UUID | None, body: Any, role: str = "authenticated"
             ) -> dict[str, Any]:
    query, params = named_call("request_generation", request=Jsonb(body))
    with db.as_role(role, user) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return dict(row["request_generation"])


def _refused(db: Database, user: uuid.UUID | None, body: Any, role: str = "authenticated"
             ) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        _request(db, user, body, role)
    return caught.value


def test_it_creates_the_generation_and_its_job(db: Database) -> None:
    user = db.make_user()
    body = {"prompt": " a lighthouse at dawn ", "negative_prompt": "blurry", "model_id": FLUX,
            "width": 1344, "height": "768", "seed": 42, "style": "photo",
            "user_id": str(uuid.uuid4())}  # ignored: the user is the token's
    out = _request(db, user, body)
    gen = db.generation(out["generation_id"])
    job = db.job(out["job_id"])
    assert gen["user_id"] == user and gen["status"] == "queued"
    assert gen["job_id"] == uuid.UUID(out["job_id"])
    assert (gen["prompt"], gen["model"], gen["style"]) == ("a lighthouse at dawn", "FLUX Schnell",
                                                           "photo")
    assert (gen["width"], gen["height"], gen["steps"]) == (1344, 768, 4)
    assert float(gen["guidance_scale"]) == 7.5
    assert job["job_type"] == "generate-image" and job["created_by"] == user
    assert job["payload"] == {
        "generation_id": out["generation_id"], "user_id": str(user),
        "prompt": "a lighthouse at dawn", "negative_prompt": "blurry", "model_id": FLUX,
        "model_version": None, "width": 1344, "height": 768, "num_inference_steps": 4,
        "guidance_scale": 7.5, "seed": 42, "source_image_url": None, "strength": None,
    }


def test_the_catalogues_defaults_and_version(db: Database) -> None:
    user = db.make_user()
    out = _request(db, user, {"prompt": "p", "model_id": SDXL})
    payload = db.job(out["job_id"])["payload"]
    assert payload["model_version"] == SDXL_VERSION
    assert (payload["width"], payload["height"], payload["num_inference_steps"]) == (1024, 1024, 30)
    assert payload["guidance_scale"] == 7.5
    assert db.generation(out["generation_id"])["model"] == "SDXL"
    out = _request(db, user, {"prompt": "p", "model_id": SDXL, "model_version": SDXL_VERSION,
                              "source_image_url": "https://x.supabase.co/a.png",
                              "strength": "0.4"})
    payload = db.job(out["job_id"])["payload"]
    assert payload["source_image_url"] == "https://x.supabase.co/a.png"
    assert payload["strength"] == 0.4


def test_only_whitespace_is_trimmed(db: Database) -> None:
    """Letters at the ends stay (a model id ending in "v", a prompt starting with "f")."""
    user = db.make_user()
    out = _request(db, user, {"prompt": "\t\x0bfine art v \n", "model_id": " black-forest-labs/flux-dev ",
                              "style": "vivid"})
    gen = db.generation(out["generation_id"])
    assert (gen["prompt"], gen["model"], gen["style"]) == ("fine art v", "FLUX Dev", "vivid")
    assert db.job(out["job_id"])["payload"]["model_id"] == "black-forest-labs/flux-dev"


def test_a_model_without_a_name_is_stored_by_its_replicate_id(db: Database) -> None:
    with db.admin() as conn:
        conn.execute("insert into public.models (name, replicate_id, is_active)"
                     " values ('', 'test-owner/bare', true)")
    out = _request(db, db.make_user(), {"prompt": "p", "model_id": "test-owner/bare"})
    assert db.generation(out["generation_id"])["model"] == "test-owner/bare"
    payload = db.job(out["job_id"])["payload"]
    assert (payload["width"], payload["num_inference_steps"], payload["guidance_scale"]) == (
        1024, 30, 7.5)


BAD: list[tuple[Any, str]] = [
    ([{"prompt": "p"}], "JSON object"),
    ("text", "JSON object"),
    ({"model_id": FLUX}, "prompt"),
    ({"prompt": "  ", "model_id": FLUX}, "prompt"),
    ({"prompt": 5, "model_id": FLUX}, "prompt"),
    ({"prompt": "p"}, "model_id"),
    ({"prompt": "p", "model_id": ["x"]}, "model_id"),
    ({"prompt": "x" * 2001, "model_id": FLUX}, "too long"),
    ({"prompt": "p", "negative_prompt": "n" * 2001, "model_id": FLUX}, "too long"),
    ({"prompt": "a\u0001b", "model_id": FLUX}, "control"),
    ({"prompt": "p", "model_id": FLUX, "width": 255}, "width"),
    ({"prompt": "p", "model_id": FLUX, "height": 2049}, "height"),
    ({"prompt": "p", "model_id": FLUX, "width": 1000.5}, "whole number"),
    ({"prompt": "p", "model_id": FLUX, "width": True}, "width"),
    ({"prompt": "p", "model_id": FLUX, "width": "wide"}, "width"),
    ({"prompt": "p", "model_id": FLUX, "width": "1e9999999"}, "width"),
    ({"prompt": "p", "model_id": FLUX, "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "p", "model_id": FLUX, "num_inference_steps": 101}, "num_inference_steps"),
    ({"prompt": "p", "model_id": FLUX, "guidance_scale": -0.1}, "guidance_scale"),
    ({"prompt": "p", "model_id": FLUX, "guidance_scale": 30.01}, "guidance_scale"),
    ({"prompt": "p", "model_id": FLUX, "seed": -1}, "seed"),
    ({"prompt": "p", "model_id": FLUX, "seed": 2**31}, "seed"),
    ({"prompt": "p", "model_id": FLUX, "strength": 1.5}, "strength"),
    ({"prompt": "p", "model_id": FLUX, "source_image_url": "file:///etc/passwd"},
     "source_image_url"),
    ({"prompt": "p", "model_id": "nobody/nothing"}, "Unknown model: nobody/nothing"),
    ({"prompt": "p", "model_id": FLUX, "model_version": SDXL_VERSION}, "model_version"),
    ({"prompt": "p", "model_id": SDXL, "model_version": "attacker/model:abc"}, "model_version"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_requests_are_22023_naming_the_field_and_create_nothing(
    db: Database, body: Any, message: str
) -> None:
    error = _refused(db, db.make_user(), body)
    assert error.sqlstate == "22023", error
    assert message.lower() in str(error).lower()
    assert db.scalar("select count(*) from public.image_generations") == 0
    assert db.scalar("select count(*) from public.job_queue") == 0


@pytest.mark.parametrize(("role", "signed_in"), [("anon", False), ("service_role", False),
                                                 ("authenticated", False)])
def test_only_a_signed_in_user_may_call_it(db: Database, role: str, signed_in: bool) -> None:
    error = _refused(db, None, {"prompt": "p", "model_id": FLUX}, role)
    assert error.sqlstate == "42501"


def test_a_token_of_a_deleted_user_is_refused(db: Database) -> None:
    error = _refused(db, uuid.uuid4(), {"prompt": "p", "model_id": FLUX})
    assert error.sqlstate == "PT401"
    assert db.scalar("select count(*) from public.image_generations") == 0


def test_the_limit_is_429(db: Database) -> None:
    db.set_in_flight_limit(1)
    user = db.make_user()
    _request(db, user, {"prompt": "p", "model_id": FLUX})
    error = _refused(db, user, {"prompt": "p", "model_id": FLUX})
    assert error.sqlstate == "PT429"
    assert db.scalar("select count(*) from public.job_queue") == 1
