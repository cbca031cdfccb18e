"""Token verification of the functions, like Supabase's: HS256 with the project secret,
ES256 through the project's JWKS, the three access levels, and the configuration knobs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from devstack.pg import free_port
from devstack.stack import StackState
from functions_compat.app import create_app
from functions_compat.auth import AuthError, JwksCache
from tests.functions.conftest import FLUX, Functions, User, assert_error, counts


def claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": user_id,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
        "email": "someone@example.test",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def other_ec_key() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


GOOD_BODY = {"prompt": "p", "model_id": FLUX}


# -- user endpoints ------------------------------------------------------------------------
def test_es256_user_token_is_verified_through_the_jwks(
    fn: Functions, stack_state: StackState, user: User, admin_conn: psycopg.Connection
) -> None:
    # The stack serves the JWKS from the very process that runs the functions: a blocking
    # fetch on the event loop would hang here.
    token = stack_state.keys.sign(claims(user.id), alg="ES256")
    response = fn.post("start-generation", token, json=GOOD_BODY, timeout=15)
    assert response.status_code == 200, response.text
    gen = admin_conn.execute("select user_id from public.image_generations where id = %s",
                             (response.json()["generation_id"],)).fetchone()
    assert gen is not None and str(gen[0]) == user.id


def test_auths_own_es256_token_is_verified(fn: Functions, user: User) -> None:
    assert jwt.get_unverified_header(user.token)["alg"] == "ES256"  # as hosted Auth signs
    assert fn.post("start-generation", user.token, json=GOOD_BODY).status_code == 200


def test_legacy_hs256_token_is_verified(
    fn: Functions, stack_state: StackState, user: User
) -> None:
    token = stack_state.keys.sign(claims(user.id))
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert fn.post("start-generation", token, json=GOOD_BODY).status_code == 200


def _bad_tokens(state: StackState, user_id: str) -> dict[str, tuple[str, str]]:
    keys = state.keys
    public_pem = keys._public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = keys.sign(claims(user_id))
    head, _body, sig = good.split(".")
    tampered_claims = claims(str(uuid.uuid4()))
    return {
        "alg none": (jwt.encode(claims(user_id), None, algorithm="none"), "algorithm"),
        "HS512": (jwt.encode(claims(user_id), keys.jwt_secret, algorithm="HS512"), "algorithm"),
        "wrong secret": (jwt.encode(claims(user_id), "x" * 64, algorithm="HS256"), "invalid"),
        "key confusion": (handmade({"alg": "HS256", "typ": "JWT"}, claims(user_id), public_pem),
                          "invalid"),
        "unknown kid": (jwt.encode(claims(user_id), other_ec_key(), algorithm="ES256",
                                   headers={"kid": str(uuid.uuid4())}), "signing key"),
        "foreign key, our kid": (jwt.encode(claims(user_id), other_ec_key(), algorithm="ES256",
                                            headers={"kid": keys.kid}), "invalid"),
        "tampered": (f"{head}.{b64(json.dumps(tampered_claims).encode())}.{sig}", "invalid"),
        "expired": (keys.sign(claims(user_id, exp=int(time.time()) - 60)), "expired"),  # > leeway
        "no exp": (keys.sign(claims(user_id, exp=None)), "invalid"),
        "not yet valid": (keys.sign(claims(user_id, nbf=int(time.time()) + 600)), "invalid"),
        "aud anon": (keys.sign(claims(user_id, aud="anon")), "invalid"),
        "no aud": (keys.sign(claims(user_id, aud=None)), "invalid"),
        "role anon": (keys.sign(claims(user_id, role="anon")), "user"),
        "role service": (keys.sign(claims(user_id, role="service_role")), "user"),
        "sub not uuid": (keys.sign(claims("12345")), "sub"),
        "no sub": (keys.sign(claims(user_id, sub=None)), "sub"),
        "anon key": (keys.anon_key, "invalid"),
        "publishable key": ("sb_publishable_" + "a" * 30, "api key"),
        "huge": ("a" * 20_000, "authorization"),
        "three dots": ("...", "invalid"),
    }


def test_bad_user_tokens_are_401_and_create_nothing(
    fn: Functions, stack_state: StackState, user: User, admin_conn: psycopg.Connection
) -> None:
    before = counts(admin_conn, user.id)
    failures: dict[str, str] = {}
    for case, (token, expected) in _bad_tokens(stack_state, user.id).items():
        response = fn.post("start-generation", token, json=GOOD_BODY, timeout=15)
        body = response.json()
        if response.status_code != 401 or expected not in body.get("error", "").lower():
            failures[case] = f"{response.status_code} {body}"
        assert response.headers["access-control-allow-origin"] == "*"
    assert failures == {}
    assert counts(admin_conn, user.id) == before


def test_a_valid_token_of_a_user_who_no_longer_exists_is_401(
    fn: Functions, stack_state: StackState, admin_conn: psycopg.Connection
) -> None:
    ghost = str(uuid.uuid4())
    token = stack_state.keys.sign(claims(ghost))
    response = fn.post("start-generation", token, json=GOOD_BODY)
    assert response.status_code == 401
    assert response.json() == {"error": "User not found"}
    assert counts(admin_conn, ghost) == (0, 0)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer  x y", "Token abc", "bearer"])
def test_malformed_authorization_headers_are_401(fn: Functions, header: str) -> None:
    response = httpx.post(fn.url("generate-image"), headers={"Authorization": header},
                          json=GOOD_BODY)
    assert response.status_code == 401
    assert "authorization" in response.json()["error"].lower()


def test_user_endpoints_ignore_the_apikey_header(fn: Functions, user: User) -> None:
    # Only Authorization carries a user's session; an apikey alone is no user.
    response = httpx.post(fn.url("start-generation"), headers={"apikey": user.token},
                          json=GOOD_BODY)
    assert response.status_code == 401


# -- project and service endpoints -----------------------------------------------------------
@pytest.fixture
def empty_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")
    yield


def test_process_jobs_accepts_any_project_jwt(
    standalone: Functions, stack_state: StackState, user: User, empty_queue: None
) -> None:
    keys = stack_state.keys
    accepted = {
        "anon key": {"Authorization": f"Bearer {keys.anon_key}"},
        "service key": {"Authorization": f"Bearer {keys.service_role_key}"},
        "user token": {"Authorization": f"Bearer {user.token}"},
        "ES256 user": {"Authorization": f"Bearer {keys.sign(claims(user.id), alg='ES256')}"},
        "apikey only": {"apikey": keys.anon_key},
    }
    for case, headers in accepted.items():
        response = httpx.post(standalone.url("process-jobs"), headers=headers, json={},
                              timeout=30)
        assert response.status_code == 200, (case, response.text)
        assert response.json()["processed"] == 0


def test_process_jobs_rejects_invalid_project_jwts(
    standalone: Functions, stack_state: StackState
) -> None:
    keys = stack_state.keys
    now = int(time.time())
    rejected = {
        "expired anon": jwt.encode({"role": "anon", "exp": now - 60}, keys.jwt_secret, "HS256"),
        "other project": jwt.encode({"role": "anon", "exp": now + 60}, "y" * 64, "HS256"),
        "unknown role": keys.sign({"role": "postgres", "exp": now + 60}),
        "unknown sb key": "sb_secret_" + "b" * 30,
    }
    for case, token in rejected.items():
        response = standalone.post("process-jobs", token, json={}, timeout=30)
        assert response.status_code == 401, (case, response.text)


def test_process_generation_accepts_the_service_key_in_either_header(
    standalone: Functions, stack_state: StackState
) -> None:
    key = stack_state.keys.service_role_key
    es256_service = stack_state.keys.sign(
        {"role": "service_role", "exp": int(time.time()) + 60}, alg="ES256"
    )
    for headers in ({"apikey": key}, {"Authorization": f"Bearer {key}"},
                    {"Authorization": f"Bearer {es256_service}"}):
        # An empty body gets past authentication and stops at validation: no prediction.
        response = httpx.post(standalone.url("process-generation"), headers=headers, json={},
                              timeout=30)
        assert response.status_code == 400, response.text
        assert response.json() == {"success": False, "error": "prompt is required"}


# -- configuration knobs (in-process instances) ---------------------------------------------
class InProcess:
    """An app instance with its own configuration, called in-process over ASGI."""

    def __init__(self, state: StackState, **env: str) -> None:
        merged = {**state.env(), **env}
        self.app: Starlette = create_app({k: v for k, v in merged.items() if v})

    def post(self, path: str, token: str, body: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
                return await client.post(
                    path, headers={"Authorization": f"Bearer {token}"}, json=body
                )

        return asyncio.run(go())


def test_issuer_is_checked_when_configured(stack_state: StackState, user: User) -> None:
    issuer = f"{stack_state.url}/auth/v1"
    app = InProcess(stack_state, FUNCTIONS_JWT_ISSUER=issuer)
    wrong = stack_state.keys.sign(claims(user.id, iss="https://elsewhere/auth/v1"))
    right = stack_state.keys.sign(claims(user.id, iss=issuer))
    assert app.post("/start-generation", wrong, {}).status_code == 401
    # authenticated; the empty body is what fails
    assert app.post("/start-generation", right, {}).status_code == 400


def test_without_a_jwt_secret_only_asymmetric_tokens_pass(
    stack_state: StackState, user: User
) -> None:
    app = InProcess(stack_state, SUPABASE_JWT_SECRET="")
    response = app.post("/start-generation", stack_state.keys.sign(claims(user.id)), {})
    assert response.status_code == 401 and "HS256" in response.json()["error"]
    es256 = stack_state.keys.sign(claims(user.id), alg="ES256")
    assert app.post("/functions/v1/start-generation", es256, {}).status_code == 400


def test_unreachable_jwks_is_500_not_401(stack_state: StackState, user: User) -> None:
    app = InProcess(stack_state, SUPABASE_URL=f"http://127.0.0.1:{free_port()}")
    es256 = stack_state.keys.sign(claims(user.id), alg="ES256")
    response = app.post("/start-generation", es256, {})
    assert response.status_code == 500
    assert response.json() == {"error": "Cannot verify the token: signing keys unavailable"}
    hs256 = stack_state.keys.sign(claims(user.id))
    assert app.post("/start-generation", hs256, {}).status_code == 400  # HS256: no JWKS


def test_jwks_is_cached_and_refetched_for_a_new_kid(stack_state: StackState) -> None:
    url = f"{stack_state.url}/auth/v1/.well-known/jwks.json"

    async def scenario() -> int:
        cache = JwksCache(url, min_refresh=3600, min_gap=0.1)
        for _ in range(3):
            key = await cache.key_for(stack_state.keys.kid, "ES256")
            assert key.key_id == stack_state.keys.kid
        assert cache.fetches == 1  # one fetch served three lookups
        forged = str(uuid.uuid4())
        for _ in range(3):
            with pytest.raises(AuthError):
                await cache.key_for(forged, "ES256")
        return cache.fetches

    # an unknown kid is fetched for once (a key may have rotated in), then remembered
    assert asyncio.run(scenario()) == 2


# -- rotation, clock skew and the new API keys (issue 12) -----------------------------------
def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": "ES256", "use": "sig"}


def _es256(key: ec.EllipticCurvePrivateKey, kid: str, body: dict[str, Any]) -> str:
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def test_a_rotated_signing_key_is_fetched_at_once(stack_state: StackState, user: User) -> None:
    """Auth starts signing with a new key: the first token carrying its kid must pass, not
    wait out a refresh interval (tokens with the previous key keep passing)."""
    from tests.unit.local_http import LocalServer, Route

    path = "/auth/v1/.well-known/jwks.json"
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = LocalServer()
    try:
        server.routes[path] = Route(body=json.dumps({"keys": [_jwk(old, "k-old")]}).encode())
        app = InProcess(stack_state, SUPABASE_URL=f"http://127.0.0.1:{server.port}",
                        SUPABASE_JWT_SECRET="")
        # authenticated, then refused for the empty body: 400, not 401
        assert app.post("/start-generation", _es256(old, "k-old", claims(user.id)), {}
                        ).status_code == 400
        server.routes[path] = Route(
            body=json.dumps({"keys": [_jwk(new, "k-new"), _jwk(old, "k-old")]}).encode()
        )
        fresh = app.post("/start-generation", _es256(new, "k-new", claims(user.id)), {})
        assert fresh.status_code == 400, fresh.text
        assert app.post("/start-generation", _es256(old, "k-old", claims(user.id)), {}
                        ).status_code == 400
        fetches = len(server.seen)
        forged = ec.generate_private_key(ec.SECP256R1())
        for _ in range(3):
            refused = app.post("/start-generation", _es256(forged, "k-forged", claims(user.id)),
                               {})
            assert refused.status_code == 401
        assert len(server.seen) == fetches + 1  # one fetch for the unknown kid, then remembered
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("shift", "accepted"),
    [
        ({"iat": 10, "nbf": 10}, True),  # issued by an Auth whose clock is 10 s ahead
        ({"exp": -10}, True),  # expired 10 s ago: within PostgREST's 30 s
        ({"exp": -45}, False),
        ({"iat": 45, "nbf": 45}, False),
    ],
)
def test_tokens_get_thirty_seconds_of_leeway(
    fn: Functions, stack_state: StackState, user: User, shift: dict[str, int], accepted: bool
) -> None:
    now = int(time.time())
    body = claims(user.id)
    for name, seconds in shift.items():
        body[name] = now + seconds
    for alg in ("HS256", "ES256"):
        response = fn.post("start-generation", stack_state.keys.sign(body, alg=alg), json={})
        assert response.status_code == (400 if accepted else 401), (alg, response.text)


def test_the_new_api_keys_are_accepted_where_their_role_is(
    fn: Functions, stack_state: StackState
) -> None:
    keys = stack_state.keys
    assert keys.secret_key.startswith("sb_secret_")
    assert keys.publishable_key.startswith("sb_publishable_")
    for headers in ({"apikey": keys.secret_key}, {"Authorization": f"Bearer {keys.secret_key}"}):
        response = httpx.post(fn.url("process-generation"), headers=headers, json={}, timeout=30)
        assert response.status_code == 400, response.text  # past authentication
        assert response.json()["error"] == "prompt is required"
    publishable = fn.post("process-generation", keys.publishable_key, json={})
    assert publishable.status_code == 401  # a public key is not the service role
    jobs = httpx.post(fn.url("process-jobs"), headers={"apikey": keys.publishable_key},
                      json={"job_types": ["cleanup-storage"]}, timeout=60)
    assert jobs.status_code == 200, jobs.text
    user_only = fn.post("start-generation", keys.secret_key, json=GOOD_BODY)
    assert user_only.status_code == 401  # an API key is never a user


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SUPABASE_URL": None}, "SUPABASE_URL: required but not set"),
        ({"SUPABASE_URL": "ftp://x"}, "SUPABASE_URL: must be an http(s) URL"),
        ({"SUPABASE_SERVICE_ROLE_KEY": None, "SUPABASE_SECRET_KEY": None},  # either one
         "SUPABASE_SERVICE_ROLE_KEY: required but not set"),
        ({"FUNCTIONS_MAX_PROMPT_CHARS": "0"}, "FUNCTIONS_MAX_PROMPT_CHARS"),
        ({"FUNCTIONS_MAX_PROMPT_CHARS": "many"}, "FUNCTIONS_MAX_PROMPT_CHARS"),
        ({"FUNCTIONS_GENERATE_TIMEOUT": "0"}, "FUNCTIONS_GENERATE_TIMEOUT"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"REPLICATE_API_BASE_URL": "replicate"}, "REPLICATE_API_BASE_URL"),
    ],
)
def test_bad_configuration_names_the_variable(
    stack_state: StackState, change: dict[str, str | None], message: str
) -> None:
    from functions_compat.app import create_app
    from worker.errors import ConfigError

    env = {**stack_state.env(), **change}
    with pytest.raises(ConfigError) as caught:
        create_app({k: v for k, v in env.items() if v is not None})
    assert message in caught.value.message
    assert stack_state.keys.service_role_key not in caught.value.message


def test_the_cli_refuses_to_start_with_a_bad_variable(stack_state: StackState) -> None:
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "FUNCTIONS_"))}
    env.update({**stack_state.env(), "FUNCTIONS_WEBHOOK_TOLERANCE": "lots"})
    done = subprocess.run(
        [sys.executable, "-m", "worker", "functions", "--host", "127.0.0.1", "--port", "1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "configuration error: FUNCTIONS_WEBHOOK_TOLERANCE" in done.stderr


def test_the_retired_limit_variable_is_ignored_with_a_warning(
    stack_state: StackState, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-user limit is the database's (picture_settings): the variable no longer
    changes anything, and saying so beats a silent no-op."""
    from functions_compat.config import FunctionsConfig

    with caplog.at_level("WARNING", logger="functions_compat.config"):
        config = FunctionsConfig.from_env({**stack_state.env(), "FUNCTIONS_MAX_IN_FLIGHT": "50"})
    assert not hasattr(config, "max_in_flight")
    assert "picture_settings.max_in_flight_per_user" in caplog.text


def test_without_replicate_only_the_worker_endpoints_are_unavailable(
    stack_state: StackState, user: User
) -> None:
    import asyncio

    from functions_compat.app import create_app

    env = {k: v for k, v in stack_state.env().items() if not k.startswith("REPLICATE_")}
    app = create_app(env)

    async def call(name: str, token: str, body: dict[str, Any]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            return await client.post(f"/{name}", json=body,
                                     headers={"Authorization": f"Bearer {token}"})

    jobs = asyncio.run(call("process-jobs", stack_state.keys.anon_key, {}))
    assert_error(jobs, 500, "process-jobs is not configured: REPLICATE_API_TOKEN")
    started = asyncio.run(call("start-generation", user.token, {"prompt": "p", "model_id": FLUX}))
    assert started.status_code == 200, started.text
