"""The local GoTrue subset (/auth/v1) driven by the real supabase-py (supabase_auth) client."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
import uvicorn
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.routing import Mount
from supabase import Client, ClientOptions, create_client
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from devstack import auth
from devstack.context import StackContext
from devstack.pg import free_port
from devstack.stack import StackState

PASSWORD = "correct-horse-1"


def _client(state: StackState, key: str | None = None) -> Client:
    options = ClientOptions(auto_refresh_token=False, persist_session=False)
    return create_client(state.url, key or state.keys.anon_key, options)


def _decode(state: StackState, token: str) -> dict[str, object]:
    """A user access token as hosted Auth signs it: ES256, verified through the JWKS."""
    jwks = jwt.PyJWKClient(f"{state.url}/auth/v1/.well-known/jwks.json")
    return jwt.decode(
        token,
        jwks.get_signing_key_from_jwt(token).key,
        algorithms=["ES256"],
        audience="authenticated",
        issuer=f"{state.url}/auth/v1",
    )


def test_sign_up_returns_a_session_with_gotrue_claims(
    stack_state: StackState, unique_email: str, admin_conn: psycopg.Connection
) -> None:
    client = _client(stack_state)
    res = client.auth.sign_up(
        {"email": unique_email.upper(), "password": PASSWORD, "options": {"data": {"n": 1}}}
    )
    assert res.session is not None and res.user is not None
    user = res.user
    assert user.email == unique_email  # normalised
    assert user.user_metadata == {"n": 1}
    assert user.app_metadata == {"provider": "email", "providers": ["email"]}
    assert user.email_confirmed_at is not None and user.role == "authenticated"
    assert user.identities and user.identities[0].provider == "email"
    assert res.session.expires_in == 3600 and res.session.token_type == "bearer"

    claims = _decode(stack_state, res.session.access_token)
    assert claims["sub"] == user.id
    assert (claims["role"], claims["aud"], claims["aal"]) == ("authenticated",) * 2 + ("aal1",)
    assert claims["email"] == unique_email and claims["phone"] == ""
    assert claims["user_metadata"] == {"n": 1}
    assert claims["is_anonymous"] is False
    assert int(claims["exp"]) - int(claims["iat"]) == 3600  # type: ignore[call-overload]
    assert uuid.UUID(str(claims["session_id"]))
    assert claims["amr"] == [{"method": "password", "timestamp": claims["amr"][0]["timestamp"]}]  # type: ignore[index]
    header = jwt.get_unverified_header(res.session.access_token)
    assert (header["alg"], header["kid"]) == ("ES256", stack_state.keys.kid)

    row = admin_conn.execute(
        "select encrypted_password, extensions.crypt(%s, encrypted_password) = encrypted_password"
        " from auth.users where id = %s",
        (PASSWORD, user.id),
    ).fetchone()
    assert row is not None
    hashed, matches = row
    assert hashed.startswith("$2") and PASSWORD not in hashed and matches is True


def test_sign_in_get_user_refresh_and_sign_out(stack_state: StackState, unique_email: str) -> None:
    _client(stack_state).auth.sign_up({"email": unique_email, "password": PASSWORD})
    client = _client(stack_state)
    signed_in = client.auth.sign_in_with_password({"email": unique_email, "password": PASSWORD})
    assert signed_in.session is not None and signed_in.user is not None
    first = signed_in.session

    got = client.auth.get_user()
    assert got is not None and got.user.id == signed_in.user.id

    refreshed = client.auth.refresh_session()
    assert refreshed.session is not None
    assert refreshed.session.refresh_token != first.refresh_token
    new_claims = _decode(stack_state, refreshed.session.access_token)
    assert new_claims["session_id"] == _decode(stack_state, first.access_token)["session_id"]

    client.auth.sign_out()
    assert client.auth.get_session() is None
    with pytest.raises(AuthApiError) as gone:
        client.auth.get_user(refreshed.session.access_token)
    assert (gone.value.status, gone.value.code) == (403, "session_not_found")
    with pytest.raises(AuthApiError) as revoked:
        client.auth.refresh_session(refreshed.session.refresh_token)
    assert str(revoked.value.code) == "refresh_token_already_used"


def test_sign_out_scopes(stack_state: StackState, unique_email: str) -> None:
    _client(stack_state).auth.sign_up({"email": unique_email, "password": PASSWORD})
    a, b, c = (_client(stack_state) for _ in range(3))
    sessions = [
        x.auth.sign_in_with_password({"email": unique_email, "password": PASSWORD}).session
        for x in (a, b, c)
    ]
    assert sessions[0] is not None and all(sessions)
    a.auth.sign_out({"scope": "others"})  # b and c lose their sessions, a keeps its own
    assert a.auth.get_user() is not None
    for other in (b, c):
        with pytest.raises(AuthApiError) as gone:
            other.auth.get_user()
        assert gone.value.code == "session_not_found"
    a.auth.sign_out({"scope": "local"})
    with pytest.raises(AuthApiError) as local:
        _client(stack_state).auth.get_user(sessions[0].access_token)
    assert local.value.code == "session_not_found"


def test_refresh_token_reuse_revokes_the_session(
    stack_state: StackState, unique_email: str
) -> None:
    client = _client(stack_state)
    session = client.auth.sign_up({"email": unique_email, "password": PASSWORD}).session
    assert session is not None
    rotated = client.auth.refresh_session(session.refresh_token).session
    assert rotated is not None
    with pytest.raises(AuthApiError) as reused:
        client.auth.refresh_session(session.refresh_token)
    assert (reused.value.status, str(reused.value.code)) == (400, "refresh_token_already_used")
    with pytest.raises(AuthApiError) as family:  # the successor died with the family
        client.auth.refresh_session(rotated.refresh_token)
    assert str(family.value.code) == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as unknown:
        client.auth.refresh_session("no-such-token")
    assert str(unknown.value.code) == "refresh_token_not_found"


def test_sign_up_and_sign_in_errors(stack_state: StackState, unique_email: str) -> None:
    client = _client(stack_state)
    client.auth.sign_up({"email": unique_email, "password": PASSWORD})
    with pytest.raises(AuthApiError) as dup:
        client.auth.sign_up({"email": unique_email, "password": PASSWORD})
    assert (dup.value.status, dup.value.code) == (422, "user_already_exists")
    assert dup.value.message == "User already registered"

    with pytest.raises(AuthApiError) as wrong:
        client.auth.sign_in_with_password({"email": unique_email, "password": "wrong-pass"})
    assert (wrong.value.status, wrong.value.code) == (400, "invalid_credentials")
    assert wrong.value.message == "Invalid login credentials"
    with pytest.raises(AuthApiError) as nobody:
        client.auth.sign_in_with_password({"email": "nobody@example.test", "password": PASSWORD})
    assert nobody.value.code == "invalid_credentials"

    with pytest.raises(AuthWeakPasswordError) as weak:
        client.auth.sign_up({"email": f"w-{unique_email}", "password": "12345"})
    assert (weak.value.status, weak.value.code) == (422, "weak_password")
    assert weak.value.reasons == ["length"]

    with pytest.raises(AuthApiError) as bad_email:
        client.auth.sign_up({"email": "not-an-email", "password": PASSWORD})
    assert (bad_email.value.status, bad_email.value.code) == (400, "validation_failed")


def test_bad_user_tokens(stack_state: StackState) -> None:
    client = _client(stack_state)
    forged = jwt.encode({"sub": str(uuid.uuid4()), "role": "authenticated"}, "w" * 40)
    with pytest.raises(AuthApiError) as bad:
        client.auth.get_user(forged)
    assert (bad.value.status, bad.value.code) == (403, "bad_jwt")
    ghost = stack_state.keys.sign(
        {"sub": str(uuid.uuid4()), "role": "authenticated", "exp": int(time.time()) + 60}
    )
    with pytest.raises(AuthApiError) as missing:
        client.auth.get_user(ghost)
    assert (missing.value.status, missing.value.code) == (403, "user_not_found")
    expired = stack_state.keys.sign({"sub": str(uuid.uuid4()), "exp": int(time.time()) - 5})
    with pytest.raises(AuthApiError) as old:
        client.auth.get_user(expired)
    assert old.value.code == "bad_jwt" and "expired" in old.value.message


def test_requests_need_a_verifying_api_key(stack_state: StackState) -> None:
    body = {"email": "x@example.test", "password": PASSWORD}
    none = httpx.post(f"{stack_state.url}/auth/v1/signup", json=body)
    assert none.status_code == 401
    bad = httpx.post(f"{stack_state.url}/auth/v1/signup", json=body,
                     headers={"apikey": "not-a-key"})
    assert bad.status_code == 401 and bad.json()["code"] == "invalid_api_key"
    assert bad.headers["x-supabase-api-version"] == "2024-01-01"
    unknown_sb = httpx.post(f"{stack_state.url}/auth/v1/signup", json=body,
                            headers={"apikey": "sb_publishable_nope"})  # the gateway's answer
    assert (unknown_sb.status_code, unknown_sb.json()["message"]) == (401, "Invalid API key")
    settings = httpx.get(
        f"{stack_state.url}/auth/v1/settings", headers={"apikey": stack_state.keys.anon_key}
    )
    assert settings.status_code == 200 and settings.json()["external"]["email"] is True


def test_update_user(stack_state: StackState, unique_email: str) -> None:
    client = _client(stack_state)
    client.auth.sign_up(
        {"email": unique_email, "password": PASSWORD, "options": {"data": {"a": 1}}}
    )
    updated = client.auth.update_user({"data": {"b": 2}, "password": "new-password-2"})
    assert updated.user.user_metadata == {"a": 1, "b": 2}
    fresh = _client(stack_state).auth.sign_in_with_password(
        {"email": unique_email, "password": "new-password-2"}
    )
    assert fresh.user is not None and fresh.user.id == updated.user.id


def test_admin_users(stack_state: StackState, unique_email: str) -> None:
    admin = _client(stack_state, stack_state.keys.service_role_key).auth.admin
    created = admin.create_user(
        {
            "email": unique_email,
            "password": PASSWORD,
            "email_confirm": True,
            "user_metadata": {"name": "Ada"},
        }
    ).user
    assert created.email == unique_email and created.user_metadata == {"name": "Ada"}
    assert created.email_confirmed_at is not None and created.last_sign_in_at is None
    assert admin.get_user_by_id(created.id).user.email == unique_email
    assert created.id in {u.id for u in admin.list_users(per_page=1000)}

    session = _client(stack_state).auth.sign_in_with_password(
        {"email": unique_email, "password": PASSWORD}
    )
    assert session.user is not None and session.user.id == created.id

    with pytest.raises(AuthApiError) as dup:
        admin.create_user({"email": unique_email, "password": PASSWORD})
    assert (dup.value.status, dup.value.code) == (422, "email_exists")

    pending = admin.create_user({"email": f"p-{unique_email}", "password": PASSWORD}).user
    assert pending.email_confirmed_at is None
    with pytest.raises(AuthApiError) as unconfirmed:
        _client(stack_state).auth.sign_in_with_password(
            {"email": f"p-{unique_email}", "password": PASSWORD}
        )
    assert unconfirmed.value.code == "email_not_confirmed"

    admin.delete_user(created.id)
    with pytest.raises(AuthApiError) as deleted:
        admin.get_user_by_id(created.id)
    assert (deleted.value.status, deleted.value.code) == (404, "user_not_found")
    admin.delete_user(pending.id)

    with pytest.raises(AuthApiError) as not_admin:
        _client(stack_state).auth.admin.create_user({"email": f"z-{unique_email}"})
    assert (not_admin.value.status, not_admin.value.code) == (403, "not_admin")


def test_jwks_publishes_the_ec_key(stack_state: StackState) -> None:
    res = httpx.get(f"{stack_state.url}/auth/v1/.well-known/jwks.json")  # no API key needed
    assert res.status_code == 200
    (key,) = res.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
    assert key["kid"] == stack_state.keys.kid and "d" not in key


# -- ES256 ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _auth_only_server(
    state: StackState, storage_root: Path, extras: dict[str, object]
) -> Iterator[str]:
    """A second server, in this process, serving only /auth/v1 (with the given
    ``ctx.extras``) against the session stack's database. Yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ctx = StackContext(
        keys=state.keys, pg_port=state.pg_port, public_url=url, storage_root=storage_root
    )
    ctx.extras.update(extras)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ctx.api_pool = AsyncConnectionPool(ctx.dsn("authenticator"), min_size=1, open=False)
        ctx.admin_pool = AsyncConnectionPool(ctx.dsn("supabase_admin"), min_size=1, open=False)
        await ctx.api_pool.open(wait=True)
        await ctx.admin_pool.open(wait=True)
        try:
            yield
        finally:
            await ctx.api_pool.close()
            await ctx.admin_pool.close()

    app = Starlette(routes=[Mount("/auth/v1", app=auth.create_app(ctx))], lifespan=lifespan)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "auth server did not start"
        assert thread.is_alive(), "auth server died"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def es256_auth_url(
    stack_state: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Auth with ``DEVSTACK_JWT_ALG=ES256`` in the environment (as `python -m devstack serve`
    would see it) and no ``jwt_alg`` in ``ctx.extras``."""
    monkeypatch.setenv(auth.JWT_ALG_ENV, "ES256")
    with _auth_only_server(stack_state, tmp_path, {}) as url:
        yield url


def test_signup_without_autoconfirm_returns_the_bare_user(
    stack_state: StackState, tmp_path: Path, unique_email: str
) -> None:
    with _auth_only_server(stack_state, tmp_path, {"auth_autoconfirm": False}) as url:
        client = create_client(
            url,
            stack_state.keys.anon_key,
            ClientOptions(auto_refresh_token=False, persist_session=False),
        )
        res = client.auth.sign_up({"email": unique_email, "password": PASSWORD})
        assert res.session is None
        assert res.user is not None and res.user.email_confirmed_at is None
        with pytest.raises(AuthApiError) as unconfirmed:
            client.auth.sign_in_with_password({"email": unique_email, "password": PASSWORD})
        assert (unconfirmed.value.status, unconfirmed.value.code) == (400, "email_not_confirmed")


def test_unknown_jwt_alg_is_refused(stack_state: StackState, tmp_path: Path) -> None:
    ctx = StackContext(
        keys=stack_state.keys,
        pg_port=stack_state.pg_port,
        public_url="http://x",
        storage_root=tmp_path,
    )
    ctx.extras["jwt_alg"] = "RS256"
    with pytest.raises(ValueError, match="unsupported JWT algorithm"):
        auth.create_app(ctx)


def test_es256_tokens_verify_against_jwks(
    es256_auth_url: str, stack_state: StackState, unique_email: str
) -> None:
    client = create_client(
        es256_auth_url,
        stack_state.keys.anon_key,
        ClientOptions(auto_refresh_token=False, persist_session=False),
    )
    session = client.auth.sign_up({"email": unique_email, "password": PASSWORD}).session
    assert session is not None
    token = session.access_token
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES256", stack_state.keys.kid)

    jwks = jwt.PyJWKClient(f"{es256_auth_url}/auth/v1/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience="authenticated",
        issuer=f"{es256_auth_url}/auth/v1",
    )
    assert claims["role"] == "authenticated" and claims["email"] == unique_email
    with pytest.raises(jwt.InvalidAlgorithmError):  # not an HS256 token any more
        jwt.decode(token, stack_state.keys.jwt_secret, algorithms=["HS256"])

    verified = client.auth.get_claims(token)  # supabase-py verifies asymmetric JWTs via JWKS
    assert verified is not None and verified["claims"]["sub"] == claims["sub"]
    user = client.auth.get_user(token)
    assert user is not None and user.user.email == unique_email
