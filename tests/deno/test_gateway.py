"""The stack's edge route: functions under real Deno behind the gateway's verify_jwt check.

A request without a valid project JWT never reaches the function (hosted Supabase's 401
bodies); OPTIONS does; names not served by Deno still reach functions_compat; a function
that cannot start is a 503 BOOT_ERROR; bodies and headers stream through.
"""

from __future__ import annotations

import time

import jwt
import psycopg
import pytest

from devstack.stack import StackState
from tests.deno.support import SCHNELL, call, new_user, user_token
from tests.support import Picture

MISSING = {"code": 401, "message": "Missing authorization header"}
INVALID = {"code": 401, "message": "Invalid JWT"}


def _generations(conn: psycopg.Connection, prompt: str) -> int:
    row = conn.execute(
        "select count(*) from public.image_generations where prompt = %s", (prompt,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_no_authorization_header_is_refused_by_the_gateway(
    stack_state: StackState, admin_conn: psycopg.Connection
) -> None:
    prompt = "gateway: no header"
    response = call(stack_state, "start-generation", None, {"prompt": prompt, "model_id": SCHNELL})
    assert response.status_code == 401
    assert response.json() == MISSING
    assert _generations(admin_conn, prompt) == 0


@pytest.mark.parametrize(
    "case",
    ["forged signature", "expired", "alg none", "not a JWT", "basic scheme", "empty bearer",
     "unknown ES256 key"],
)
def test_an_invalid_token_is_refused_by_the_gateway(
    stack_state: StackState, picture: Picture, admin_conn: psycopg.Connection, case: str
) -> None:
    user = picture.create_user()
    now = int(time.time())
    claims = {"sub": user, "role": "authenticated", "aud": "authenticated", "exp": now + 600}
    headers: dict[str, str] = {}
    token: str | None
    if case == "forged signature":
        token = jwt.encode(claims, "not-the-project-secret-" + "x" * 32, algorithm="HS256")
    elif case == "expired":
        token = user_token(stack_state, user, ttl=-120)
    elif case == "alg none":
        token = jwt.encode({**claims, "role": "service_role"}, "", algorithm="none")
    elif case == "not a JWT":
        token = "definitely-not-a-jwt"
    elif case == "basic scheme":
        token, headers = None, {"Authorization": "Basic dXNlcjpwYXNz"}
    elif case == "empty bearer":
        token, headers = None, {"Authorization": "Bearer"}
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        token = jwt.encode(claims, other, algorithm="ES256", headers={"kid": stack_state.keys.kid})
    prompt = f"gateway: {case}"
    body = {"prompt": prompt, "model_id": SCHNELL}
    response = call(stack_state, "start-generation", token, body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json() == INVALID
    assert _generations(admin_conn, prompt) == 0


def test_project_jwts_pass_the_gateway_and_reach_the_function(
    stack_state: StackState, picture: Picture
) -> None:
    # The anon key is a valid project JWT: the gateway lets it through and the function
    # itself answers (with its own {"error": ...} shape, as no user is behind it).
    anon = call(stack_state, "start-generation", stack_state.keys.anon_key, {"prompt": "x"})
    assert anon.status_code in (400, 401), anon.text
    assert set(anon.json()) == {"error"}
    # A user token signed with the project's asymmetric key (ES256, JWKS) passes too.
    user = picture.create_user()
    es256 = user_token(stack_state, user, alg="ES256")
    response = call(stack_state, "start-generation", es256, ["not", "an", "object"])
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "Request body must be a JSON object"}


def test_preflight_reaches_the_function_without_a_token(stack_state: StackState) -> None:
    response = call(
        stack_state,
        "start-generation",
        None,
        method="OPTIONS",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-headers"] == (
        "authorization, x-client-info, apikey, content-type"
    )
    assert len(response.headers.get_list("date")) == 1


def test_other_names_still_reach_functions_compat(stack_state: StackState) -> None:
    # process-jobs is not a Deno function here: functions_compat answers, in its own words.
    response = call(stack_state, "process-jobs", "not-a-jwt", {})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid JWT"}


def test_a_function_that_cannot_start_is_a_boot_error(stack_state: StackState) -> None:
    response = call(stack_state, "broken", stack_state.keys.anon_key, {})
    assert response.status_code == 503
    assert response.json() == {
        "code": "BOOT_ERROR",
        "message": "Function failed to start (please check logs)",
    }
    # Without a token the gateway answers first, as hosted does.
    assert call(stack_state, "broken", None, {}).json() == MISSING


def test_the_body_streams_through_to_the_function(
    stack_state: StackState, picture: Picture
) -> None:
    _user, token = new_user(picture, stack_state)
    big = b'{"prompt": "' + b"x" * (300 * 1024) + b'"}'  # over the function's 256 KiB cap
    response = call(stack_state, "start-generation", token, content=big,
                    headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json() == {"error": "Request body too large (limit 262144 bytes)"}
