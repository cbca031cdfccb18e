"""Asymmetric user tokens and key rotation, as on a hosted project: Auth signs ES256 with
the current key of its JWKS; ``POST /_stack/keys/rotate`` makes a new current key and keeps
the old one published, so tokens it signed keep working on REST, Storage, Auth and
Realtime until the key is removed (``DELETE /_stack/keys/{kid}``); HS256 tokens of the
legacy secret are accepted throughout.

A stack of its own: rotating the session stack's keys would change what every other test
sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from supabase import ClientOptions, create_client
from websockets.sync.client import connect

from devstack.stack import Stack, StackState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PASSWORD = "correct-horse-42"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, StackState]]:
    # server_env reaches the server's switches (checked in test_server_env_sets_switches)
    stack = Stack(Path(tmp_path_factory.mktemp("keys")) / "stack", fast=True,
                  server_env={"DEVSTACK_MAX_ROWS": "7"})
    state = stack.up()
    try:
        yield stack, state
    finally:
        stack.down()


def _admin(state: StackState, method: str, path: str) -> httpx.Response:
    return httpx.request(method, f"{state.url}/_stack{path}", timeout=10,
                         headers={"Authorization": f"Bearer {state.keys.service_role_key}"})


def _sign_in(state: StackState, email: str) -> str:
    client = create_client(state.url, state.keys.anon_key,
                           ClientOptions(auto_refresh_token=False, persist_session=False))
    session = client.auth.sign_in_with_password({"email": email, "password": PASSWORD}).session
    assert session is not None
    return session.access_token


def _realtime_join(state: StackState, token: str) -> dict[str, Any]:
    """phx_join of a channel as ``token``; the reply's payload."""
    url = (f"ws://127.0.0.1:{state.api_port}/realtime/v1/websocket"
           f"?apikey={state.keys.anon_key}&vsn=1.0.0")
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"topic": "realtime:keys", "event": "phx_join", "ref": "1",
                            "join_ref": "1", "payload": {"config": {}, "access_token": token}}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=10))
            if frame["event"] == "phx_reply" and frame["ref"] == "1":
                return dict(frame["payload"])
    raise AssertionError("no join reply")


def _works_everywhere(state: StackState, token: str) -> dict[str, int | str]:
    """The token's answer from each service: REST, Storage, Auth, Realtime."""
    anon = state.keys.anon_key
    headers = {"apikey": anon, "Authorization": f"Bearer {token}"}
    rest = httpx.get(f"{state.url}/rest/v1/image_generations?select=id", headers=headers)
    storage = httpx.post(f"{state.url}/storage/v1/object/list/generated-images",
                         headers=headers, json={"prefix": "", "limit": 1})
    auth = httpx.get(f"{state.url}/auth/v1/user", headers=headers)
    realtime = _realtime_join(state, token)["status"]
    return {"rest": rest.status_code, "storage": storage.status_code, "auth": auth.status_code,
            "realtime": realtime}


ALL_GOOD = {"rest": 200, "storage": 200, "auth": 200, "realtime": "ok"}


def test_rotation_keeps_old_tokens_until_their_key_is_removed(
    own_stack: tuple[Stack, StackState],
) -> None:
    stack, state = own_stack
    email = "rotate@example.test"
    created = create_client(state.url, state.keys.service_role_key).auth.admin.create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True})
    first_kid = state.keys.kid

    before = _sign_in(state, email)
    header = jwt.get_unverified_header(before)
    assert (header["alg"], header["kid"]) == ("ES256", first_kid)
    assert _works_everywhere(state, before) == ALL_GOOD

    rotated = _admin(state, "POST", "/keys/rotate").json()
    second_kid = rotated["current"]
    assert second_kid != first_kid and rotated["kids"] == [second_kid, first_kid]
    jwks = httpx.get(f"{state.url}/auth/v1/.well-known/jwks.json").json()
    assert [k["kid"] for k in jwks["keys"]] == [second_kid, first_kid]
    saved = stack.state().keys  # written to the state file: a restart keeps both
    assert (saved.kid, [k for k, _ in saved.previous]) == (second_kid, [first_kid])

    after = _sign_in(state, email)
    assert jwt.get_unverified_header(after)["kid"] == second_kid
    client = create_client(state.url, state.keys.anon_key)
    claims = client.auth.get_claims(after)  # supabase-py verifies it through the JWKS
    assert claims is not None and claims["claims"]["sub"] == created.user.id
    assert _works_everywhere(state, after) == ALL_GOOD
    assert _works_everywhere(state, before) == ALL_GOOD  # the old key still verifies

    assert _admin(state, "DELETE", f"/keys/{second_kid}").status_code == 409  # current
    assert _admin(state, "DELETE", f"/keys/{first_kid}").json()["kids"] == [second_kid]
    assert _works_everywhere(state, after) == ALL_GOOD
    revoked = _works_everywhere(state, before)
    assert revoked["rest"] == 401 and revoked["auth"] == 403
    assert revoked["storage"] in (400, 403) and revoked["realtime"] == "error"


def test_legacy_hs256_tokens_stay_accepted(own_stack: tuple[Stack, StackState]) -> None:
    _stack, state = own_stack
    now = int(time.time())
    legacy = state.keys.sign({"role": "anon", "iat": now, "exp": now + 60})  # HS256
    assert jwt.get_unverified_header(legacy)["alg"] == "HS256"
    answer = httpx.get(f"{state.url}/rest/v1/models?select=id",
                       headers={"apikey": legacy, "Authorization": f"Bearer {legacy}"})
    assert answer.status_code == 200


def test_server_env_sets_switches(own_stack: tuple[Stack, StackState]) -> None:
    _stack, state = own_stack
    assert _admin(state, "GET", "/settings").json()["max_rows"] == 7
