"""Fuzzing start-generation with random bodies (hypothesis) against the mounted app.

Whatever arrives, the function answers without a 5xx; a rejection is a JSON
``{"error": "..."}`` body and leaves no row behind (image_generations and job_queue counted
for the user before and after). Accepted bodies are fine too: their generation is
cancelled at once so the per-user limit keeps letting examples through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devstack.stack import StackState
from tests.functions.conftest import FLUX, Functions, User, cancel_in_flight, counts, sign_up

FIELDS = (
    "prompt", "model_id", "model_version", "width", "height", "num_inference_steps",
    "guidance_scale", "seed", "negative_prompt", "source_image_url", "strength", "style",
    "generation_id",
)
MODELS = (FLUX, "stability-ai/sdxl", "black-forest-labs/flux-dev", "qwen/qwen-image",
          "recraft-ai/recraft-v3-svg", "nobody/nothing", "")

def _repeat(char: str) -> st.SearchStrategy[str]:
    return st.integers(min_value=1990, max_value=2010).map(lambda n: char * n)


weird_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.sampled_from(["\ud800", "a\udfffb", "\u0000", "\u202e", "🦊" * 3, " ", "\t\n", "null",
                     "1e309", "-0", "0x10", "1_000", "  512  ", "NaN", "Infinity"]),
    _repeat("x"),
    _repeat("é").map(lambda t: t * 35),  # ~70 000 characters
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 255, 256, 2048, 2049, 2**31 - 1, 2**31, -1, 0.5, 1.0000001]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, weird_text)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(junk, st.sampled_from(MODELS), numbers.map(str))


def plausible(lo: float, hi: float, *, whole: bool) -> st.SearchStrategy[Any]:
    """Values around a field's range (in and out), as numbers or numeric strings."""
    span = (hi - lo) * 0.1 + 2
    if whole:
        base: st.SearchStrategy[Any] = st.integers(int(lo - span), int(hi + span))
    else:
        base = st.floats(lo - span, hi + span, allow_nan=False)
    return st.one_of(base, base.map(str), st.none())


NEAR_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "width": plausible(256, 2048, whole=True),
    "height": plausible(256, 2048, whole=True),
    "num_inference_steps": plausible(1, 100, whole=True),
    "guidance_scale": plausible(0, 30, whole=False),
    "seed": plausible(0, 2**31 - 1, whole=True),
    "strength": plausible(0, 1, whole=False),
    "negative_prompt": st.one_of(st.none(), st.text(max_size=30), _repeat("n")),
    "style": st.one_of(st.none(), st.text(max_size=30)),
    "model_version": st.one_of(st.none(), st.text(alphabet="0123456789abcdef", max_size=64)),
    "source_image_url": st.sampled_from([
        None, "https://ref.supabase.co/storage/v1/object/public/a.png",
        "https://replicate.delivery/x/y.webp", "http://replicate.delivery/a.png",
        "https://evil.example/a.png", "ftp://x.supabase.co/a", "https://x.supabase.co:99999/",
        "https://[::1]/a.png", "not a url",
    ]),
}
near_valid = st.fixed_dictionaries(
    {
        "prompt": st.one_of(st.just("a lighthouse at dawn"), st.text(min_size=1, max_size=60)),
        "model_id": st.sampled_from(MODELS[:5]),
    },
    optional={**NEAR_FIELDS, "generation_id": st.uuids().map(str), "junk": junk},
)
random_objects = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.one_of(st.just("a lighthouse at dawn"), field_values),
        "model_id": st.one_of(st.sampled_from(MODELS), field_values),
        **{name: field_values for name in FIELDS[2:]},
    },
).flatmap(
    lambda base: st.dictionaries(st.text(max_size=10), junk, max_size=3).map(
        lambda extra: {**extra, **base}
    )
)
bodies = st.one_of(
    near_valid.map(lambda o: json.dumps(o).encode()),
    near_valid.map(lambda o: json.dumps(o).encode()),
    random_objects.map(lambda o: json.dumps(o).encode()),
    junk.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b'{"prompt": NaN, "model_id": "x"}', b"[]", b"null",
                     b'{"prompt": "p", "model_id": "' + FLUX.encode() + b'", "width": 1e999}',
                     b"[" * 50_000, b'"\\ud800"', b'{"prompt":"\\u0000"}']),
)


@pytest.fixture(scope="module")
def fuzz_user(stack_state: StackState) -> Iterator[User]:
    u = sign_up(stack_state)
    yield u
    with psycopg.connect(
        f"host=127.0.0.1 port={stack_state.pg_port} user=supabase_admin dbname=postgres",
        autocommit=True,
    ) as conn:
        cancel_in_flight(conn, u.id)


@pytest.fixture(scope="module")
def db(stack_state: StackState) -> Iterator[psycopg.Connection]:
    with psycopg.connect(
        f"host=127.0.0.1 port={stack_state.pg_port} user=supabase_admin dbname=postgres",
        autocommit=True,
    ) as conn:
        yield conn


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@settings(
    max_examples=200,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
@given(body=bodies)
def test_start_generation_never_fails_with_5xx(
    fn: Functions, fuzz_user: User, db: psycopg.Connection, http: httpx.Client, body: bytes
) -> None:
    before = counts(db, fuzz_user.id)
    response = http.post(
        fn.url("start-generation"),
        content=body,
        headers={"Authorization": f"Bearer {fuzz_user.token}",
                 "Content-Type": "application/json"},
    )
    assert response.status_code < 500, (response.status_code, response.text, body[:300])
    assert response.headers["access-control-allow-origin"] == "*"
    data: Any = response.json()
    event(f"HTTP {response.status_code}")
    if response.status_code == 200:
        assert data["success"] is True and data["status"] == "queued"
        assert counts(db, fuzz_user.id) == (before[0] + 1, before[1] + 1)
        cancel_in_flight(db, fuzz_user.id)
        return
    assert response.status_code in (400, 413, 429), response.text
    assert isinstance(data, dict) and set(data) == {"error"}, data
    assert isinstance(data["error"], str) and data["error"]
    assert counts(db, fuzz_user.id) == before
