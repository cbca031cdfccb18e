"""/rest/v1 through the real supabase-py client: RPC, reads, writes and PostgREST's errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod

from devstack.stack import StackState
from tests.stack.rest_support import (
    RestObjects,
    admin_connect,
    client,
    create_user,
    fetch_value,
    rest,
    rest_objects,
    wait_for_schema,
)


@pytest.fixture(scope="module")
def objs(stack_state: StackState) -> Iterator[RestObjects]:
    with rest_objects(stack_state) as created:
        yield created


@pytest.fixture(scope="module")
def svc(stack_state: StackState) -> Any:
    return client(stack_state, stack_state.keys.service_role_key)


@pytest.fixture
def cleanup(stack_state: StackState, objs: RestObjects) -> Iterator[None]:
    """Write tests use ids >= 100 on the items table; remove them afterwards."""
    yield
    with admin_connect(stack_state) as conn:
        conn.execute(f'delete from public."{objs.items}" where id >= 100')  # prefix is ours


def ids(data: Any) -> list[int]:
    return [row["id"] for row in data]


def api_error(fn: Any) -> APIError:
    with pytest.raises(APIError) as info:
        fn()
    err = info.value
    assert isinstance(err.code, str) and err.code
    return err


# -- RPC -----------------------------------------------------------------------------------------
def test_rpc_scalar_defaults_and_get(svc: Any, objs: RestObjects) -> None:
    assert svc.rpc(objs.fn("add"), {"a": 40}).execute().data == 42
    assert svc.rpc(objs.fn("add"), {"a": 1, "b": 1}).execute().data == 2
    assert svc.rpc(objs.fn("add"), {"a": 3, "b": 4}, get=True).execute().data == 7


def test_rpc_arguments_are_typed_by_declaration(svc: Any, objs: RestObjects) -> None:
    args = {
        "j": {"deep": [1, {"x": None}]},
        "arr": [3, 1, 2],
        "ts": "2026-03-04T05:06:07.5+02:00",
        "u": "00000000-0000-0000-0000-00000000abcd",
        "flag": False,
    }
    out = svc.rpc(objs.fn("echo"), args).execute().data
    assert out == {
        "j": {"deep": [1, {"x": None}]},
        "arr": [3, 1, 2],
        "arr_len": 3,
        "j_type": "object",
        "ts": "2026-03-04T03:06:07.5+00:00",
        "u": args["u"],
        "flag": False,
        "t": "dflt",
    }
    got = svc.rpc(objs.fn("echo"), {**args, "t": "x"}, get=True).execute().data
    assert got["arr"] == [3, 1, 2] and got["j"] == {"deep": [1, {"x": None}]} and got["t"] == "x"


def test_rpc_void_is_204(svc: Any, objs: RestObjects, stack_state: StackState) -> None:
    assert svc.rpc(objs.fn("touch"), {"v": "touched"}).execute().data == []
    key = stack_state.keys.service_role_key
    r = rest(stack_state, "POST", f"/rpc/{objs.fn('touch')}", key=key, json={"v": "again"})
    assert r.status_code == 204 and r.content == b""
    note = svc.table(objs.items).select("note").eq("id", 1).single().execute().data
    assert note == {"note": "again"}
    svc.table(objs.items).update({"note": None}).eq("id", 1).execute()


def test_rpc_setof_with_filters_order_limit_count(svc: Any, objs: RestObjects) -> None:
    rows = svc.rpc(objs.fn("upto"), {"n": 5}).execute().data
    assert ids(rows) == [1, 2, 3, 4, 5] and rows[0]["tags"] == ["a", "b"]
    res = (
        svc.rpc(objs.fn("upto"), {"n": 5}, count="exact")
        .select("id,name")
        .gt("id", 1)
        .order("id", desc=True)
        .limit(2)
        .execute()
    )
    assert res.data == [{"id": 5, "name": "a b"}, {"id": 4, "name": 'delta "quoted"'}]
    assert res.count == 4


def test_rpc_table_composite_and_scalar_sets(svc: Any, objs: RestObjects) -> None:
    assert svc.rpc(objs.fn("squares"), {"n": 3}).execute().data == [
        {"k": 1, "sq": 1},
        {"k": 2, "sq": 4},
        {"k": 3, "sq": 9},
    ]
    one = svc.rpc(objs.fn("one"), {"item": 2}).execute().data
    assert isinstance(one, dict) and one["name"] == "beta" and one["score"] == 2.5
    assert svc.rpc(objs.fn("series"), {"n": 3}).execute().data == [1, 2, 3]


def test_rpc_single_and_overloads(svc: Any, objs: RestObjects) -> None:
    assert svc.rpc(objs.fn("upto"), {"n": 1}).single().execute().data["id"] == 1
    err = api_error(lambda: svc.rpc(objs.fn("upto"), {"n": 2}).single().execute())
    assert (err.code, err.details) == ("PGRST116", "The result contains 2 rows")
    assert svc.rpc(objs.fn("over"), {"a": 5}).execute().data == "int:5"
    assert svc.rpc(objs.fn("over"), {"b": "x"}).execute().data == "text:x"


def test_rpc_not_found(svc: Any, objs: RestObjects) -> None:
    err = api_error(lambda: svc.rpc(objs.fn("add"), {"x": 1, "a": 1}).execute())
    assert err.code == "PGRST202"
    assert (
        err.message
        == f"Could not find the function public.{objs.fn('add')}(a, x) in the schema cache"
    )
    assert err.details == (
        f"Searched for the function public.{objs.fn('add')} with parameters a, x or with a "
        "single unnamed json/jsonb parameter, but no matches were found in the schema cache."
    )
    err = api_error(lambda: svc.rpc(objs.fn("addd"), {}).execute())
    assert str(err.message).endswith("addd without parameters in the schema cache")
    assert err.hint == f"Perhaps you meant to call the function public.{objs.fn('add')}"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("P0001", 400),
        ("PW001", 400),
        ("P0002", 500),
        ("22023", 400),
        ("23505", 409),
        ("23503", 409),
        ("42501", 403),
        ("PT418", 418),
        ("XX000", 500),
    ],
)
def test_rpc_raised_sqlstates(
    stack_state: StackState, objs: RestObjects, code: str, status: int
) -> None:
    key = stack_state.keys.service_role_key
    r = rest(stack_state, "POST", f"/rpc/{objs.fn('raise')}", key=key, json={"code": code})
    assert r.status_code == status
    assert r.json() == {
        "code": code,
        "details": "the detail",
        "hint": "the hint",
        "message": "boom",
    }


def test_rpc_get_runs_read_only(stack_state: StackState, objs: RestObjects) -> None:
    key = stack_state.keys.service_role_key
    r = rest(stack_state, "GET", f"/rpc/{objs.fn('write')}", key=key, params={"v": "x"})
    assert r.status_code == 405 and r.json()["code"] == "25006"
    r = rest(stack_state, "POST", f"/rpc/{objs.fn('write')}", key=key, json={"v": None})
    assert r.status_code == 200 and r.json() is None


def test_project_queue_rpcs(svc: Any, stack_state: StackState) -> None:
    job_type = "cleanup-storage"
    payload = {"generation_id": str(uuid.uuid4()), "n": 1}
    # Top priority: jobs other tests left pending must not be claimed instead of this one.
    job_id = (
        svc.rpc("enqueue_job", {"p_job_type": job_type, "p_payload": payload, "p_priority": 10_000})
        .execute()
        .data
    )
    assert isinstance(job_id, str) and uuid.UUID(job_id)
    claimed = (
        svc.rpc(
            "claim_next_job",
            {"p_job_types": [job_type], "p_worker_id": "w-rest", "p_lease_seconds": 60},
        )
        .execute()
        .data
    )
    assert len(claimed) == 1 and claimed[0]["id"] == job_id
    assert claimed[0]["status"] == "processing" and claimed[0]["payload"] == payload
    err = api_error(
        lambda: svc.rpc(
            "complete_job", {"p_job_id": job_id, "p_worker_id": "someone-else"}
        ).execute()
    )
    assert err.code == "PW001" and "lease lost" in str(err.message) and err.hint
    done = (
        svc.rpc(
            "complete_job", {"p_job_id": job_id, "p_result": {"ok": True}, "p_worker_id": "w-rest"}
        )
        .execute()
        .data
    )
    assert done[0]["status"] == "completed" and done[0]["result"] == {"ok": True}
    missing = str(uuid.uuid4())
    err = api_error(lambda: svc.rpc("complete_job", {"p_job_id": missing}).execute())
    assert (err.code, err.message) == ("P0002", f"job {missing} not found")


# -- reads ------------------------------------------------------------------------------
def test_select_columns_aliases_casts_json_paths(svc: Any, objs: RestObjects) -> None:
    row = (
        svc.table(objs.items)
        .select(
            "id, label:name, score::text, k:meta->k, kk:meta->>k, nx:meta->nested->>x, "
            "tags, created_at"
        )
        .eq("id", 1)
        .single()
        .execute()
        .data
    )
    assert row == {
        "id": 1,
        "label": "alpha",
        "score": "1.5",
        "k": 1,
        "kk": "1",
        "nx": "true",
        "tags": ["a", "b"],
        "created_at": "2026-01-01T00:00:00.123456+00:00",
    }
    full = svc.table(objs.items).select("*").eq("id", 1).execute().data[0]
    assert full["meta"] == {"k": 1, "nested": {"x": True}} and full["score"] == 1.5
    assert full["ref"] == "00000000-0000-0000-0000-000000000001" and full["qty"] == 7


def test_embedding(svc: Any, objs: RestObjects) -> None:
    rows = (
        svc.table(objs.items)
        .select(f"id, kids:{objs.children}(label), {objs.profiles}(bio)")
        .in_("id", [1, 2, 3])
        .order("id")
        .order("rank", foreign_table="kids")
        .execute()
        .data
    )
    assert rows == [
        {"id": 1, "kids": [{"label": "x2"}, {"label": "x1"}], objs.profiles: {"bio": "bio1"}},
        {"id": 2, "kids": [{"label": "y1"}], objs.profiles: None},
        {"id": 3, "kids": [], objs.profiles: None},
    ]
    parent = (
        svc.table(objs.children)
        .select(f"label, item:{objs.items}(name)")
        .eq("label", "y1")
        .execute()
        .data
    )
    assert parent == [{"label": "y1", "item": {"name": "beta"}}]
    inner = (
        svc.table(objs.items)
        .select(f"id, {objs.children}!inner(label)")
        .eq(f"{objs.children}.label", "x1")
        .order("id")
        .execute()
        .data
    )
    assert inner == [{"id": 1, objs.children: [{"label": "x1"}]}]
    limited = (
        svc.table(objs.items)
        .select(f"id, {objs.children}(label)")
        .eq("id", 1)
        .limit(1, foreign_table=objs.children)
        .execute()
        .data
    )
    assert len(limited[0][objs.children]) == 1


def test_embedding_generations_and_images(svc: Any, stack_state: StackState) -> None:
    with admin_connect(stack_state) as conn:
        uid = create_user(conn)
        gen = fetch_value(
            conn,
            "insert into public.image_generations (user_id, prompt, model, status) "
            "values (%s, 'a cat', 'FLUX Schnell', 'completed') returning id::text",
            (uid,),
        )
        conn.execute(
            "insert into public.images (generation_id, user_id, public_url, width) "
            "values (%s, %s, 'http://img/1.webp', 512)",
            (gen, uid),
        )
    rows = svc.table("image_generations").select("*, images(*)").eq("id", gen).execute().data
    assert len(rows) == 1 and rows[0]["prompt"] == "a cat"
    assert [(i["public_url"], i["width"]) for i in rows[0]["images"]] == [
        ("http://img/1.webp", 512)
    ]
    image = (
        svc.table("images")
        .select("width, image_generations(prompt, status)")
        .eq("generation_id", gen)
        .single()
        .execute()
        .data
    )
    assert image == {"width": 512, "image_generations": {"prompt": "a cat", "status": "completed"}}


FILTERS = [
    (lambda q: q.eq("name", "alpha"), [1]),
    (lambda q: q.neq("flag", True), [2, 5]),
    (lambda q: q.gt("score", 2.5), [3, 4, 5]),
    (lambda q: q.gte("score", 2.5), [2, 3, 4, 5]),
    (lambda q: q.lt("score", 3), [1, 2]),
    (lambda q: q.lte("score", 3), [1, 2, 3]),
    (lambda q: q.like("name", "a*"), [1, 5]),
    (lambda q: q.like("name", "%ta%"), [2, 4]),
    (lambda q: q.ilike("name", "*RAY"), [3]),
    (lambda q: q.is_("note", None), [1]),
    (lambda q: q.is_("flag", True), [1, 4]),
    (lambda q: q.is_("flag", False), [2, 5]),
    (lambda q: q.not_.is_("flag", None), [1, 2, 4, 5]),
    (lambda q: q.in_("name", ["alpha", "a b", 'delta "quoted"']), [1, 4, 5]),
    (lambda q: q.in_("note", ["has,comma", "par(en)", "Percent%"]), [3, 4, 5]),
    (lambda q: q.not_.in_("id", [1, 2]), [3, 4, 5]),
    (lambda q: q.in_("id", []), []),
    (lambda q: q.or_("score.gt.4,name.eq.alpha"), [1, 4, 5]),
    (lambda q: q.or_("and(flag.is.true,score.lt.2),id.eq.5"), [1, 5]),
    (lambda q: q.not_.or_("id.eq.1,id.eq.2"), [3, 4, 5]),
    (lambda q: q.contains("tags", ["b"]), [1, 2]),
    (lambda q: q.overlaps("tags", ["c", "a"]), [1, 4]),
    (lambda q: q.contains("meta", {"k": 2}), [2]),
    (lambda q: q.eq("meta->>k", "4"), [4]),
    (lambda q: q.filter("name", "fts", "gamma"), [3]),
    (lambda q: q.filter("name", "match", "^a"), [1, 5]),
    (lambda q: q.like_any_of("name", "al*,be*"), [1, 2]),
    (lambda q: q.eq("ref", "00000000-0000-0000-0000-000000000001"), [1]),
    (lambda q: q.gte("created_at", "2026-01-04T00:00:00+00:00"), [4, 5]),
]


@pytest.mark.parametrize(("apply", "expected"), FILTERS, ids=[str(i) for i in range(len(FILTERS))])
def test_filters(svc: Any, objs: RestObjects, apply: Any, expected: list[int]) -> None:
    query = svc.table(objs.items).select("id").lt("id", 100)
    assert ids(apply(query).order("id").execute().data) == expected


def test_order_limit_offset(svc: Any, objs: RestObjects) -> None:
    base = svc.table(objs.items).select("id").lt("id", 100)
    ordered = base.order("flag", desc=True, nullsfirst=True).order("id").execute().data
    assert ids(ordered) == [3, 1, 4, 2, 5]
    q = svc.table(objs.items).select("id").lt("id", 100)
    assert ids(q.order("id").limit(2).offset(1).execute().data) == [2, 3]
    q = svc.table(objs.items).select("id").lt("id", 100)
    assert ids(q.order("id").limit(10).range(3, 4).execute().data) == [4, 5]  # last limit wins


def test_count_content_range_and_head(svc: Any, objs: RestObjects, stack_state: StackState) -> None:
    res = (
        svc.table(objs.items)
        .select("id", count="exact")
        .lt("id", 100)
        .order("id")
        .range(0, 1)
        .execute()
    )
    assert (ids(res.data), res.count) == ([1, 2], 5)
    head = svc.table(objs.items).select("*", count="exact", head=True).lt("id", 100).execute()
    assert head.count == 5 and head.data == []
    key = stack_state.keys.service_role_key
    path = f"/{objs.items}?select=id&id=lt.100&order=id&limit=2&offset=1"
    r = rest(stack_state, "GET", path, key=key, headers={"Prefer": "count=exact"})
    assert (r.status_code, r.headers["content-range"]) == (206, "1-2/5")
    r = rest(stack_state, "GET", path, key=key)
    assert (r.status_code, r.headers["content-range"]) == (200, "1-2/*")
    r = rest(
        stack_state,
        "GET",
        f"/{objs.items}?id=lt.100&offset=9",
        key=key,
        headers={"Prefer": "count=exact"},
    )
    assert r.status_code == 416 and r.json()["code"] == "PGRST103"


def test_single_and_maybe_single(svc: Any, objs: RestObjects) -> None:
    assert svc.table(objs.items).select("name").eq("id", 2).single().execute().data == {
        "name": "beta"
    }
    err = api_error(lambda: svc.table(objs.items).select("id").lt("id", 100).single().execute())
    assert err.json() == {
        "code": "PGRST116",
        "details": "The result contains 5 rows",
        "hint": None,
        "message": "Cannot coerce the result to a single JSON object",
    }
    err = api_error(lambda: svc.table(objs.items).select("id").eq("id", 99).single().execute())
    assert err.details == "The result contains 0 rows"
    assert svc.table(objs.items).select("id").eq("id", 99).maybe_single().execute() is None
    assert svc.table(objs.items).select("id").eq("id", 3).maybe_single().execute().data == {"id": 3}
    err = api_error(lambda: svc.table(objs.items).select("id").lt("id", 3).maybe_single().execute())
    assert err.code == "406"


def test_query_string_is_form_urlencoded(stack_state: StackState, objs: RestObjects) -> None:
    key = stack_state.keys.service_role_key
    r = rest(stack_state, "GET", f"/{objs.items}?select=id&name=eq.a+b", key=key)
    assert r.json() == [{"id": 5}]
    r = rest(stack_state, "GET", f"/{objs.items}?select=id&name=eq.a%2Bb", key=key)
    assert r.json() == []
    r = rest(
        stack_state,
        "GET",
        f'/{objs.items}?select=id&name=in.(a+b,"delta+\\"quoted\\"")&order=id',
        key=key,
    )
    assert r.json() == [{"id": 4}, {"id": 5}]


# -- writes -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("cleanup")
def test_insert_single_minimal_and_bulk(svc: Any, objs: RestObjects) -> None:
    row = (
        svc.table(objs.items)
        .insert(
            {
                "id": 100,
                "name": "new",
                "tags": ["x", "y"],
                "meta": {"a": [1, None]},
                "ref": "00000000-0000-0000-0000-0000000000aa",
                "created_at": "2026-02-01T10:00:00Z",
            }
        )
        .execute()
        .data
    )
    assert (
        row[0]["qty"] == 7 and row[0]["tags"] == ["x", "y"] and row[0]["meta"] == {"a": [1, None]}
    )
    assert row[0]["created_at"] == "2026-02-01T10:00:00+00:00"
    res = svc.table(objs.items).insert({"id": 101, "name": "quiet"}, returning=ReturnMethod.minimal)
    assert res.execute().data == []
    bulk = (
        svc.table(objs.items)
        .insert([{"id": 102, "name": "b1", "qty": 1}, {"id": 103, "name": "b2"}])
        .execute()
        .data
    )
    assert [(r["id"], r["qty"]) for r in bulk] == [(102, 1), (103, None)]
    defaults = (
        svc.table(objs.items)
        .insert(
            [{"id": 104, "name": "d1", "qty": 1}, {"id": 105, "name": "d2"}], default_to_null=False
        )
        .execute()
        .data
    )
    assert [(r["id"], r["qty"]) for r in defaults] == [(104, 1), (105, 7)]
    assert ids(svc.table(objs.items).select("id").gte("id", 100).order("id").execute().data) == [
        100,
        101,
        102,
        103,
        104,
        105,
    ]


@pytest.mark.usefixtures("cleanup")
def test_upsert(svc: Any, objs: RestObjects) -> None:
    table = svc.table(objs.items)
    table.insert({"id": 110, "name": "orig", "code": "u1"}).execute()
    merged = table.upsert({"id": 110, "name": "merged"}).execute().data
    assert merged[0]["name"] == "merged" and merged[0]["code"] == "u1"
    ignored = table.upsert({"id": 110, "name": "ignored"}, ignore_duplicates=True).execute().data
    assert ignored == []
    by_code = table.upsert({"id": 110, "code": "u1", "name": "by-code"}, on_conflict="code")
    assert by_code.execute().data[0]["name"] == "by-code"
    table.upsert([{"id": 111, "name": "n111"}, {"id": 110, "name": "again"}]).execute()
    names = table.select("id,name").gte("id", 110).order("id").execute().data
    assert names == [{"id": 110, "name": "again"}, {"id": 111, "name": "n111"}]


@pytest.mark.usefixtures("cleanup")
def test_update_and_delete(svc: Any, objs: RestObjects, stack_state: StackState) -> None:
    table = svc.table(objs.items)
    table.insert(
        [{"id": 120, "name": "u"}, {"id": 121, "name": "u"}, {"id": 122, "name": "v"}]
    ).execute()
    updated = (
        table.update({"note": "changed", "meta": {"m": 1}}).eq("name", "u").order("id").execute()
    )
    assert sorted(ids(updated.data)) == [120, 121] and updated.data[0]["meta"] == {"m": 1}
    res = (
        table.update({"qty": 3}, count="exact", returning=ReturnMethod.minimal)
        .gte("id", 120)
        .execute()
    )
    assert (res.data, res.count) == ([], 3)
    deleted = table.delete().eq("id", 121).execute().data
    assert ids(deleted) == [121] and deleted[0]["note"] == "changed"
    gone = (
        table.delete(count="exact", returning=ReturnMethod.minimal).in_("id", [120, 122]).execute()
    )
    assert gone.count == 2
    key = stack_state.keys.service_role_key
    r = rest(
        stack_state,
        "DELETE",
        f"/{objs.items}?id=eq.999",
        key=key,
        headers={"Content-Type": "application/json"},
        content=b"{}",
    )
    assert r.status_code == 204


@pytest.mark.usefixtures("cleanup")
def test_headers_only_and_single_write_rollback(stack_state: StackState, objs: RestObjects) -> None:
    key = stack_state.keys.service_role_key
    r = rest(
        stack_state,
        "POST",
        f"/{objs.items}",
        key=key,
        json={"id": 130, "name": "h"},
        headers={"Prefer": "return=headers-only"},
    )
    assert r.status_code == 201 and r.content == b""
    assert r.headers["location"] == f"/{objs.items}?id=eq.130"
    r = rest(
        stack_state,
        "POST",
        f"/{objs.items}",
        key=key,
        json=[{"id": 131, "name": "s"}, {"id": 132, "name": "s"}],
        headers={"Prefer": "return=representation", "Accept": "application/vnd.pgrst.object+json"},
    )
    assert r.status_code == 406 and r.json()["details"] == "The result contains 2 rows"
    r = rest(stack_state, "GET", f"/{objs.items}?id=in.(131,132)", key=key)
    assert r.json() == []  # rolled back


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.usefixtures("cleanup")
def test_constraint_errors(svc: Any, objs: RestObjects) -> None:
    err = api_error(lambda: svc.table(objs.items).insert({"id": 1, "name": "dup"}).execute())
    assert (err.code, err.details) == ("23505", "Key (id)=(1) already exists.")
    err = api_error(
        lambda: svc.table(objs.children).insert({"item_id": 9999, "label": "x"}).execute()
    )
    assert err.code == "23503"
    err = api_error(lambda: svc.table(objs.items).insert({"id": 140}).execute())
    assert err.code == "23502"
    err = api_error(lambda: svc.table(objs.items).select("id").eq("ref", "not-a-uuid").execute())
    assert (err.code, err.message) == ("22P02", 'invalid input syntax for type uuid: "not-a-uuid"')


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/nope_table", 404, "PGRST205"),
        ("/{items}?select=nope", 400, "42703"),
        ("/{items}?nope=eq.1", 400, "42703"),
        ("/{items}?order=nope", 400, "42703"),
        ("/{items}?select=id,(", 400, "PGRST100"),
        ("/{items}?id=in.1,2", 400, "PGRST100"),
        ("/{items}?order=id.sideways", 400, "PGRST100"),
        ("/{items}?select=id,nope(*)", 400, "PGRST200"),
        ("/{items}?select=id::nosuchtype", 400, "42704"),
        ("/a/b", 404, "PGRST125"),
        ("/rpc/nope_fn", 404, "PGRST202"),
    ],
)
def test_request_errors(
    stack_state: StackState, objs: RestObjects, path: str, status: int, code: str
) -> None:
    r = rest(
        stack_state, "GET", path.format(items=objs.items), key=stack_state.keys.service_role_key
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "details", "hint", "message"} and body["code"] == code


def test_payload_profile_and_method_errors(
    svc: Any, objs: RestObjects, stack_state: StackState
) -> None:
    err = api_error(lambda: svc.table(objs.items).insert({"id": 150, "nope": 1}).execute())
    assert (err.code, err.message) == (
        "PGRST204",
        f"Could not find the 'nope' column of '{objs.items}' in the schema cache",
    )
    err = api_error(lambda: svc.schema("storage").table("objects").select("*").execute())
    assert (err.code, err.message) == ("PGRST106", "Invalid schema: storage")
    key = stack_state.keys.service_role_key
    r = rest(stack_state, "PUT", f"/{objs.items}", key=key, json={})
    assert r.status_code == 405 and r.json()["code"] == "PGRST117"
    r = rest(
        stack_state,
        "POST",
        f"/{objs.items}",
        key=key,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["code"] == "PGRST102"
    r = rest(stack_state, "GET", f"/{objs.items}", key=key, headers={"Accept": "text/csv"})
    assert r.status_code == 406 and r.json()["code"] == "PGRST107"
    r = rest(stack_state, "GET", f"/{objs.items}")
    assert r.status_code == 401 and r.json()["message"] == "No API key found in request"


def test_schema_changes_are_served_once_the_ddl_notify_reloaded_the_cache(
    svc: Any, objs: RestObjects, stack_state: StackState
) -> None:
    """As on hosted: the migration's DDL fires pgrst_ddl_watch (NOTIFY pgrst), PostgREST
    reloads its schema cache a moment later; until then the new objects are unknown."""
    assert svc.table(objs.items).select("id").eq("id", 1).execute().data == [{"id": 1}]
    late = f"{objs.prefix}_late"
    key = stack_state.keys.service_role_key
    with admin_connect(stack_state) as conn:
        conn.execute("set role postgres")
        conn.execute(f'create table public."{late}" (id int primary key, v text)')
        conn.execute(f"insert into public.\"{late}\" values (1, 'one')")
        conn.execute(f"alter table public.\"{objs.items}\" add column extra text default 'e'")
        conn.execute(
            f'create function public."{objs.prefix}_late_fn"(x int) returns int '
            "language sql as 'select x * 2'"
        )
        too_early = rest(stack_state, "POST", f"/rpc/{objs.prefix}_late_fn", key=key,
                         json={"x": 21})
    try:
        assert (too_early.status_code, too_early.json()["code"]) == (404, "PGRST202")
        wait_for_schema(stack_state, f"/{late}", f"/rpc/{objs.prefix}_late_fn")
        assert svc.table(late).select("*").execute().data == [{"id": 1, "v": "one"}]
        assert svc.table(objs.items).select("extra").eq("id", 1).execute().data == [{"extra": "e"}]
        assert svc.rpc(f"{objs.prefix}_late_fn", {"x": 21}).execute().data == 42
    finally:
        with admin_connect(stack_state) as conn:
            conn.execute("set role postgres")
            conn.execute(f'drop table public."{late}"')
            conn.execute(f'alter table public."{objs.items}" drop column extra')


def test_schema_cache_reloads_only_when_notified(
    objs: RestObjects, stack_state: StackState
) -> None:
    """No reload on a miss and none on a timer: without NOTIFY pgrst, a new function stays
    unknown (PGRST202, 404) however long one waits."""
    fn = f"{objs.prefix}_unannounced"
    key = stack_state.keys.service_role_key
    time.sleep(1.0)  # past any reload still due from earlier tests' DDL
    with admin_connect(stack_state) as conn:
        conn.execute("alter event trigger pgrst_ddl_watch disable")
        try:
            conn.execute("set role postgres")
            conn.execute(f'create function public."{fn}"() returns int language sql as $$ select 7 $$')
            conn.execute("reset role")
        finally:
            conn.execute("alter event trigger pgrst_ddl_watch enable")
        for _ in range(3):  # well past the reload delay, and a miss each time
            time.sleep(0.4)
            missed = rest(stack_state, "POST", f"/rpc/{fn}", key=key, json={})
            assert (missed.status_code, missed.json()["code"]) == (404, "PGRST202")
        conn.execute("notify pgrst, 'reload schema'")
    wait_for_schema(stack_state, f"/rpc/{fn}")
    served = rest(stack_state, "POST", f"/rpc/{fn}", key=key, json={})
    assert (served.status_code, served.json()) == (200, 7)


def test_views_stripped_nulls_and_root(
    svc: Any, objs: RestObjects, stack_state: StackState
) -> None:
    summary = svc.table("queue_summary").select("pending, processing").execute().data
    assert len(summary) == 1 and isinstance(summary[0]["pending"], int)
    stripped = svc.table(objs.items).select("id, note, flag").eq("id", 1).strip_nulls().execute()
    assert stripped.data == [{"id": 1, "flag": True}]
    r = rest(stack_state, "GET", "/", key=stack_state.keys.service_role_key)
    assert r.status_code == 200 and f"/{objs.items}" in r.json()["paths"]
    assert f"/rpc/{objs.fn('add')}" in r.json()["paths"]
