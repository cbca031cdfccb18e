"""/rest/v1 security: JWT handling, RLS and grants enforced by Postgres, hostile input."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError

from devstack.stack import StackState
from tests.stack.rest_support import (
    HOSTILE_COLUMNS,
    RestObjects,
    admin_connect,
    authenticator_activity,
    client,
    create_user,
    rest,
    rest_objects,
    user_token,
)


@dataclass(frozen=True)
class Tenant:
    uid: str
    token: str
    generation: str
    image: str
    job: str


def _tenant(conn: Any, state: StackState) -> Tenant:
    uid = create_user(conn)
    gen = conn.execute(
        "insert into public.image_generations (user_id, prompt, model) values (%s, %s,"
        " 'FLUX Schnell') returning id::text",
        (uid, f"prompt of {uid}"),
    ).fetchone()[0]
    image = conn.execute(
        "insert into public.images (generation_id, user_id, public_url) values (%s, %s, 'u') "
        "returning id::text",
        (gen, uid),
    ).fetchone()[0]
    job = conn.execute(
        "insert into public.job_queue (job_type, payload, created_by, status) "
        "values ('cleanup-storage', '{}', %s, 'completed') returning id::text",
        (uid,),
    ).fetchone()[0]
    return Tenant(uid, user_token(state.keys, uid), gen, image, job)


@pytest.fixture(scope="module")
def tenants(stack_state: StackState) -> tuple[Tenant, Tenant]:
    with admin_connect(stack_state) as conn:
        return _tenant(conn, stack_state), _tenant(conn, stack_state)


@pytest.fixture(scope="module")
def objs(stack_state: StackState) -> Iterator[RestObjects]:
    with rest_objects(stack_state) as created:
        yield created


def user_client(state: StackState, token: str) -> Any:
    return client(state, state.keys.anon_key, token)


def api_error(fn: Any) -> APIError:
    with pytest.raises(APIError) as info:
        fn()
    return info.value


# -- RLS and grants ------------------------------------------------------------------------
def test_users_see_only_their_rows(stack_state: StackState, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    client = user_client(stack_state, a.token)
    gens = client.table("image_generations").select("id, user_id, images(id)").execute().data
    assert [(g["id"], g["user_id"], [i["id"] for i in g["images"]]) for g in gens] == [
        (a.generation, a.uid, [a.image])
    ]
    assert [i["id"] for i in client.table("images").select("id").execute().data] == [a.image]
    assert [j["id"] for j in client.table("job_queue").select("id").execute().data] == [a.job]
    assert (
        client.table("image_generations").select("id").eq("id", b.generation).execute().data == []
    )


def test_anon_reads_models_but_not_generations(stack_state: StackState) -> None:
    anon = client(stack_state, stack_state.keys.anon_key)
    models = anon.table("models").select("replicate_id").execute().data
    assert {"replicate_id": "black-forest-labs/flux-schnell"} in models
    err = api_error(lambda: anon.table("image_generations").select("*").execute())
    assert (err.code, err.message) == ("42501", "permission denied for table image_generations")
    r = rest(stack_state, "GET", "/image_generations", key=stack_state.keys.anon_key)
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        ("enqueue_job", {"p_job_type": "cleanup-storage", "p_payload": {}}),
        ("claim_next_job", {}),
        ("complete_job", {"p_job_id": str(uuid.uuid4())}),
    ],
)
def test_queue_rpcs_are_service_role_only(
    stack_state: StackState, tenants: tuple[Tenant, Tenant], fn: str, args: dict[str, Any]
) -> None:
    anon = rest(stack_state, "POST", f"/rpc/{fn}", key=stack_state.keys.anon_key, json=args)
    assert anon.status_code == 401 and anon.json()["code"] == "42501"
    assert anon.json()["message"] == f"permission denied for function {fn}"
    user = rest(
        stack_state,
        "POST",
        f"/rpc/{fn}",
        key=stack_state.keys.anon_key,
        bearer=tenants[0].token,
        json=args,
    )
    assert user.status_code == 403 and user.json()["code"] == "42501"


def test_user_writes_follow_policies(
    stack_state: StackState, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    client = user_client(stack_state, a.token)
    own = client.table("image_generations").insert(
        {"user_id": a.uid, "prompt": "mine", "model": "FLUX Schnell"}
    ).execute()
    assert own.data[0]["user_id"] == a.uid
    err = api_error(
        lambda: (
            client.table("image_generations")
            .insert({"user_id": b.uid, "prompt": "x", "model": "FLUX Schnell"})
            .execute()
        )
    )
    # Refused by the generation rules (a user writes their own rows only), before RLS.
    assert err.code == "42501" and "own" in str(err.message)
    err = api_error(
        lambda: (
            client.table("image_generations")
            .update({"prompt": "p"})
            .eq("id", a.generation)
            .execute()
        )
    )
    assert err.code == "42501"
    assert client.table("image_generations").delete().eq("id", b.generation).execute().data == []
    err = api_error(
        lambda: client.rpc("cancel_generation", {"p_generation_id": b.generation}).execute()
    )
    assert err.code == "PT404"
    cancelled = client.rpc("cancel_generation", {"p_generation_id": own.data[0]["id"]}).execute()
    assert cancelled.data["status"] == "cancelled"


def test_claims_reach_the_database(
    stack_state: StackState, objs: RestObjects, tenants: tuple[Tenant, Tenant]
) -> None:
    a = tenants[0]
    r = rest(
        stack_state,
        "GET",
        f"/rpc/{objs.fn('whoami')}",
        key=stack_state.keys.anon_key,
        bearer=a.token,
        headers={"X-Test": "hello"},
    )
    assert r.json() == {
        "user": "authenticated",
        "uid": a.uid,
        "role": "authenticated",
        "method": "GET",
        "path": f"/rpc/{objs.fn('whoami')}",
        "header": "hello",
        "claims_sub": a.uid,
        "read_only": "on",
    }
    es256 = user_token(stack_state.keys, a.uid, alg="ES256")
    r = rest(
        stack_state,
        "POST",
        f"/rpc/{objs.fn('whoami')}",
        key=stack_state.keys.anon_key,
        bearer=es256,
        json={},
    )
    assert (r.json()["uid"], r.json()["read_only"]) == (a.uid, "off")
    # apikey alone authenticates; Authorization wins over apikey.
    r = rest(
        stack_state,
        "GET",
        f"/rpc/{objs.fn('whoami')}",
        headers={"apikey": stack_state.keys.service_role_key},
    )
    assert r.json()["user"] == "service_role"
    r = rest(
        stack_state,
        "GET",
        f"/rpc/{objs.fn('whoami')}",
        key=stack_state.keys.service_role_key,
        bearer=a.token,
    )
    assert r.json()["user"] == "authenticated"


# -- JWT errors ----------------------------------------------------------------------------------
def test_invalid_and_expired_tokens(stack_state: StackState) -> None:
    keys = stack_state.keys
    forged = keys.anon_key[:-4] + ("AAAA" if not keys.anon_key.endswith("AAAA") else "BBBB")
    for bad in (forged, "not-a-jwt", "a.b.c"):
        r = rest(stack_state, "GET", "/models", key=keys.anon_key, bearer=bad)
        assert r.status_code == 401 and r.json()["code"] == "PGRST301", bad
        assert r.headers["www-authenticate"].startswith("Bearer")
    skewed = user_token(keys, str(uuid.uuid4()), ttl=-10)  # PostgREST allows 30 s of skew
    assert rest(stack_state, "GET", "/models", key=keys.anon_key, bearer=skewed).status_code == 200
    expired = user_token(keys, str(uuid.uuid4()), ttl=-45)
    r = rest(stack_state, "GET", "/models", key=keys.anon_key, bearer=expired)
    assert r.status_code == 401
    assert r.json() == {"code": "PGRST303", "details": None, "hint": None, "message": "JWT expired"}
    now = int(time.time())
    superuser = keys.sign({"role": "supabase_admin", "exp": now + 60})
    r = rest(stack_state, "GET", "/models", key=keys.anon_key, bearer=superuser)
    assert r.status_code == 403 and r.json()["code"] == "42501"
    no_role = keys.sign({"sub": "x", "exp": now + 60})
    r = rest(stack_state, "GET", "/image_generations", key=keys.anon_key, bearer=no_role)
    assert r.status_code == 401 and r.json()["code"] == "42501"  # no role claim: anon
    sb = client(stack_state, keys.anon_key, expired)
    err = api_error(lambda: sb.table("models").select("*").execute())
    assert (err.code, err.message) == ("PGRST303", "JWT expired")


# -- hostile identifiers and values ---------------------------------------------------------------
def _hostile_names(objs: RestObjects) -> list[str]:
    return [c.format(victim=objs.victim) for c in HOSTILE_COLUMNS]


HOSTILE_VALUES = [
    "'; drop table {victim}; --",
    'quote " and \\ backslash',
    "%(p0)s %s %% {{}}",
    "comma, (paren) :colon",
    "ünïcødé ✓",
    "null",
]


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_hostile_column_names(stack_state: StackState, objs: RestObjects) -> None:
    svc = client(stack_state, stack_state.keys.service_role_key)
    key = stack_state.keys.service_role_key
    names = _hostile_names(objs)
    row = {"id": 1, **{name: f"v-{i}" for i, name in enumerate(names)}}
    assert svc.table(objs.hostile).insert(row).execute().data == [row]
    for i, name in enumerate(names):
        got = svc.table(objs.hostile).select(f"id,{_quoted(name)}").eq("id", 1).order(_quoted(name))
        assert got.execute().data == [{"id": 1, name: f"v-{i}"}], name
        # Filter keys quoted as PostgREST's grammar wants (supabase-py quotes only some names).
        r = rest(
            stack_state,
            "GET",
            f"/{objs.hostile}",
            key=key,
            params={"select": "id", _quoted(name): f"eq.v-{i}"},
        )
        assert r.json() == [{"id": 1}], name
        updated = svc.table(objs.hostile).update({name: f"w-{i}"}).eq("id", 1).execute()
        assert updated.data[0][name] == f"w-{i}"
    bulk = [{"id": 2, names[0]: "x"}, {"id": 3, names[1]: "y", names[2]: "z"}]
    inserted = svc.table(objs.hostile).insert(bulk).execute().data
    assert [(r["id"], r[names[0]], r[names[1]]) for r in inserted] == [
        (2, "x", None),
        (3, None, "y"),
    ]
    _assert_victim_intact(stack_state, objs)


@pytest.mark.parametrize(
    "select",
    [
        'id,"x"; drop table {victim}; --"',
        "id;drop table {victim}",
        "id,{victim}(*)",
        'id,"a\\"b"::text; drop table {victim}',
        "id::text;drop",
    ],
)
def test_hostile_select_is_rejected(
    stack_state: StackState, objs: RestObjects, select: str
) -> None:
    r = rest(
        stack_state,
        "GET",
        f"/{objs.hostile}",
        key=stack_state.keys.service_role_key,
        params={"select": select.format(victim=objs.victim)},
    )
    assert r.status_code in (400, 404) and r.json()["code"] in (
        "PGRST100",
        "42703",
        "PGRST200",
        "42704",
    )
    _assert_victim_intact(stack_state, objs)


def test_hostile_values_round_trip(stack_state: StackState, objs: RestObjects) -> None:
    svc = client(stack_state, stack_state.keys.service_role_key)
    column = "sp ace"
    for i, template in enumerate(HOSTILE_VALUES, start=10):
        value = template.format(victim=objs.victim)
        svc.table(objs.hostile).insert({"id": i, column: value}).execute()
        assert svc.table(objs.hostile).select("id").eq(column, value).execute().data == [{"id": i}]
        assert svc.table(objs.hostile).select("id").in_(
            column, [value, "other"]
        ).execute().data == [{"id": i}]
        pattern = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = svc.table(objs.hostile).select("id").like(column, pattern)
        assert {"id": i} in like.execute().data
        assert (
            svc.rpc(
                objs.fn("echo"),
                {"j": {"v": value}, "arr": [], "ts": None, "u": None, "flag": None, "t": value},
            )
            .execute()
            .data["t"]
            == value
        )
    _assert_victim_intact(stack_state, objs)


def test_hostile_paths(stack_state: StackState, objs: RestObjects) -> None:
    key = stack_state.keys.service_role_key
    for path in (f"/{objs.victim};drop table {objs.victim}", f'/{objs.victim}"', "/pg_user"):
        r = rest(stack_state, "GET", path, key=key)
        assert r.status_code == 404 and r.json()["code"] == "PGRST205"
    r = rest(stack_state, "POST", f"/rpc/{objs.fn('add')}(1);--", key=key, json={})
    assert r.status_code == 404 and r.json()["code"] == "PGRST202"
    r = rest(
        stack_state, "POST", f"/rpc/{objs.fn('add')}", key=key, json={"a": "1); drop table x; --"}
    )
    assert r.status_code == 400 and r.json()["code"] == "22P02"
    _assert_victim_intact(stack_state, objs)


def _assert_victim_intact(state: StackState, objs: RestObjects) -> None:
    with admin_connect(state) as conn:
        assert conn.execute(f'select id from public."{objs.victim}"').fetchall() == [(1,)]


def test_no_transaction_left_open(stack_state: StackState, objs: RestObjects) -> None:
    key = stack_state.keys.service_role_key
    for _ in range(5):
        rest(stack_state, "POST", f"/rpc/{objs.fn('raise')}", key=key, json={"code": "P0001"})
        rest(stack_state, "GET", f"/{objs.items}?id=eq.not-a-number", key=key)
        rest(
            stack_state,
            "GET",
            f"/{objs.items}",
            key=key,
            headers={"Accept": "application/vnd.pgrst.object+json"},
        )
    with admin_connect(stack_state) as conn:
        _, idle_in_tx = authenticator_activity(conn)
    assert idle_in_tx == 0


def test_client_disconnect_returns_the_connection(
    stack_state: StackState, objs: RestObjects
) -> None:
    key = stack_state.keys.service_role_key
    with pytest.raises(httpx.ReadTimeout):
        rest(stack_state, "POST", f"/rpc/{objs.fn('sleep')}", key=key, json={"s": 1.0}, timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with admin_connect(stack_state) as conn:
            _, idle_in_tx = authenticator_activity(conn)
            sleeping = conn.execute(
                "select count(*) from pg_stat_activity where usename = 'authenticator' "
                "and query like '%pg_sleep%' and state <> 'idle'"
            ).fetchone()
        if idle_in_tx == 0 and sleeping == (0,):
            break
        time.sleep(0.2)
    assert (idle_in_tx, sleeping) == (0, (0,))
    r = rest(stack_state, "POST", f"/rpc/{objs.fn('add')}", key=key, json={"a": 1})
    assert r.json() == 3
