"""Realtime postgres_changes through supabase-py's async client, against the session stack.

Rows are written straight into Postgres (the changes come from the WAL, whoever writes);
supabase-py subscribes exactly as the worker does. Where a test must show that an event
did NOT arrive it writes a later "sentinel" change and waits for that one: events reach a
channel in commit order, so anything earlier has been delivered by then.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from supabase import AsyncClient, acreate_client

from devstack.stack import StackState
from tests.stack.realtime_support import Recorder, create_generation, create_user

pytestmark = pytest.mark.timeout(120)

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def admin_dsn(st: StackState) -> str:
    return f"host=127.0.0.1 port={st.pg_port} user=supabase_admin dbname=postgres"


async def connect_db(st: StackState) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(admin_dsn(st), autocommit=True)


async def subscribe(sb: AsyncClient, name: str, rec: Recorder, event: str, table: str,
                    filter: str | None = None) -> None:
    channel = sb.channel(name)
    channel.on_postgres_changes(event, rec.on_change, table=table, filter=filter)  # type: ignore[arg-type]
    channel.on_system(rec.on_system)
    await channel.subscribe(rec.on_state)
    assert rec.states and rec.states[-1][1] == "SUBSCRIBED", rec.states
    await rec.wait_subscribed()


async def with_client(st: StackState, key: str, body: Callable[[AsyncClient], Awaitable[None]],
                      token: str | None = None) -> None:
    sb = await acreate_client(st.url, key)
    if token is not None:
        await sb.realtime.set_auth(token)
    try:
        await body(sb)
    finally:
        await sb.remove_all_channels()


def is_event(kind: str, **record: Any) -> Callable[[dict[str, Any]], bool]:
    def pred(e: dict[str, Any]) -> bool:
        rec = e.get("record") if kind != "DELETE" else e.get("old_record")
        return e["type"] == kind and all((rec or {}).get(k) == v for k, v in record.items())

    return pred


# -- image_generations and job_queue as service_role -----------------------------------------

def test_image_generations_insert_update_delete(stack_state: StackState) -> None:
    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        await subscribe(sb, "gens", rec, "*", "image_generations")
        db = await connect_db(stack_state)
        async with db:
            cur = await db.execute(
                "insert into public.image_generations (prompt, model, width, height, steps, "
                "guidance_scale) values ('a red fox', 'FLUX Schnell', 768, 512, 30, 7.5)"
                " returning id::text")
            gid = (await cur.fetchone() or [""])[0]
            ins = await rec.wait_for(is_event("INSERT", id=gid))
            await db.execute("update public.image_generations set status = 'queued' "
                             "where id = %s", [gid])
            upd = await rec.wait_for(is_event("UPDATE", id=gid))
            await db.execute("delete from public.image_generations where id = %s", [gid])
            dele = await rec.wait_for(is_event("DELETE", id=gid))

        assert ins["schema"] == "public" and ins["table"] == "image_generations"
        assert ins["errors"] is None
        assert "old_record" not in ins  # omitted, never null
        assert ins["record"]["prompt"] == "a red fox" and ins["record"]["status"] == "pending"
        assert upd["record"]["status"] == "queued"
        assert upd["old_record"] == {"id": gid}  # replica identity default: the primary key
        assert dele["old_record"] == {"id": gid}
        assert "record" not in dele
        assert [c["name"] for c in ins["columns"]][:3] == ["id", "user_id", "prompt"]

    run(with_client(stack_state, stack_state.keys.service_role_key, body))


def test_job_queue_events_with_typed_payload(stack_state: StackState) -> None:
    run_id = uuid.uuid4().hex

    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        await subscribe(sb, "jobs", rec, "*", "job_queue")
        db = await connect_db(stack_state)
        async with db:
            before = datetime.now(UTC)
            cur = await db.execute(
                "insert into public.job_queue (job_type, payload, priority) "
                "values ('cleanup-storage', %s::jsonb, 5) returning id::text, created_at",
                [f'{{"run": "{run_id}", "nested": {{"n": [1, 2.5, null, true]}}}}'])
            row = await cur.fetchone()
            assert row is not None
            job_id, created_at = row
            ins = await rec.wait_for(is_event("INSERT", id=job_id))
            await db.execute("update public.job_queue set status = 'processing', "
                             "attempt_number = 1 where id = %s", [job_id])
            upd = await rec.wait_for(is_event("UPDATE", id=job_id))
            await db.execute("delete from public.job_queue where id = %s", [job_id])
            await rec.wait_for(is_event("DELETE", id=job_id))

        record = ins["record"]
        assert record["payload"] == {"run": run_id, "nested": {"n": [1, 2.5, None, True]}}
        assert record["priority"] == 5 and isinstance(record["priority"], int)
        assert record["result"] is None
        assert datetime.fromisoformat(record["created_at"]) == created_at
        assert upd["record"]["status"] == "processing" and upd["record"]["attempt_number"] == 1
        assert ISO_MS_Z.match(ins["commit_timestamp"]), ins["commit_timestamp"]
        committed = datetime.fromisoformat(ins["commit_timestamp"].replace("Z", "+00:00"))
        assert abs((committed - before).total_seconds()) < 5
        types = {c["name"]: c["type"] for c in ins["columns"]}
        assert types["payload"] == "jsonb" and types["priority"] == "int4"
        assert types["id"] == "uuid" and types["created_at"] == "timestamptz"

    run(with_client(stack_state, stack_state.keys.service_role_key, body))


# -- typed values; a table outside the publication ---------------------------------------------

def test_typed_values_of_a_newly_published_table(
    stack_state: StackState, admin_conn: psycopg.Connection[Any]
) -> None:
    table = f"rt_types_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier("public", table)
    admin_conn.execute(sql.SQL(
        "create table {} (id bigint generated always as identity primary key, flag boolean, "
        "nums int[], day date, big bigint, ratio float8, amount numeric(10, 2), "
        "doc jsonb, raw json, at timestamptz, label text)").format(ident))
    try:
        async def body(sb: AsyncClient) -> None:
            rec = Recorder()
            db = await connect_db(stack_state)
            async with db:
                # Not published yet: consumed from the WAL and dropped.
                await db.execute(sql.SQL("insert into {} (label) values ('early')").format(ident))
                await db.execute(sql.SQL("alter publication supabase_realtime add table {}")
                                 .format(ident))
                await subscribe(sb, "types", rec, "INSERT", table)
                await db.execute(sql.SQL(
                    "insert into {} (flag, nums, day, big, ratio, amount, doc, raw, at, label) "
                    "values (true, '{{1,2,3}}', '2024-02-29', 9007199254740993, 0.25, 12.5, "
                    "'{{\"a\": {{\"b\": [1, \"x\"]}}}}', '[1, 2]', "
                    "'2024-01-02 03:04:05.678+00', 'late')").format(ident))
                late = await rec.wait_for(is_event("INSERT", label="late"))
            assert not rec.matching(is_event("INSERT", label="early"))
            r = late["record"]
            assert r["flag"] is True
            assert r["nums"] == [1, 2, 3]
            assert r["day"] == "2024-02-29"
            assert r["big"] == 9007199254740993  # int8 stays an exact integer
            assert r["ratio"] == 0.25
            assert r["amount"] == 12.5
            assert r["doc"] == {"a": {"b": [1, "x"]}}
            assert r["raw"] == [1, 2]
            assert r["at"] == "2024-01-02T03:04:05.678+00:00"
            assert isinstance(r["id"], int)
            types = {c["name"]: c["type"] for c in late["columns"]}
            assert types == {"id": "int8", "flag": "bool", "nums": "_int4", "day": "date",
                             "big": "int8", "ratio": "float8", "amount": "numeric",
                             "doc": "jsonb", "raw": "json", "at": "timestamptz",
                             "label": "text"}

        run(with_client(stack_state, stack_state.keys.service_role_key, body))
    finally:
        admin_conn.execute(sql.SQL("drop table if exists {}").format(ident))


# -- filters and ordering ------------------------------------------------------------------


def test_supabase_py_reports_a_table_outside_the_publication(
    stack_state: StackState, admin_conn: psycopg.Connection[Any]
) -> None:
    """SUBSCRIBED from the join reply, then CHANNEL_ERROR from the server's system error
    (realtime-py then rejoins by itself; the server never retries on its own)."""
    table = f"rt_unpub_{uuid.uuid4().hex[:8]}"
    admin_conn.execute(f"create table public.{table} (id int primary key)")

    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        channel = sb.channel("unpublished")
        channel.on_postgres_changes("INSERT", rec.on_change, table=table)
        channel.on_system(rec.on_system)
        await channel.subscribe(rec.on_state)
        assert rec.states[-1][1] == "SUBSCRIBED"
        await rec.wait_state("CHANNEL_ERROR")
        error = next(e for _, s, e in rec.states if s == "CHANNEL_ERROR")
        assert error is not None and "Unable to subscribe to changes" in error
        assert table in error and not rec.systems  # never "Subscribed to PostgreSQL"

    try:
        run(with_client(stack_state, stack_state.keys.service_role_key, body))
    finally:
        admin_conn.execute(f"drop table public.{table}")

def test_filters_select_rows(stack_state: StackState, admin_conn: psycopg.Connection[Any]) -> None:
    a = create_generation(admin_conn, None, width=512)
    b = create_generation(admin_conn, None, width=1024)

    async def body(sb: AsyncClient) -> None:
        by_id, wide, done = Recorder(), Recorder(), Recorder()
        channel = sb.channel("filters")
        # The uuid is given upper case: Postgres compares uuids, not strings.
        channel.on_postgres_changes("UPDATE", by_id.on_change, table="image_generations",  # type: ignore[arg-type]
                                    filter=f"id=eq.{a.upper()}")
        channel.on_postgres_changes("UPDATE", wide.on_change, table="image_generations",  # type: ignore[arg-type]
                                    filter="width=gt.600")
        channel.on_postgres_changes("UPDATE", done.on_change, table="image_generations",  # type: ignore[arg-type]
                                    filter="status=in.(completed,failed)")
        channel.on_system(by_id.on_system)
        await channel.subscribe(by_id.on_state)
        assert by_id.states[-1][1] == "SUBSCRIBED"
        await by_id.wait_subscribed()
        db = await connect_db(stack_state)
        async with db:
            # (A finished generation stays finished: the terminal statuses come last.)
            for gid, status in ((b, "queued"), (a, "queued"), (b, "completed"), (a, "failed")):
                await db.execute("update public.image_generations set status = %s "
                                 "where id = %s", [status, gid])
            await by_id.wait_for(is_event("UPDATE", id=a, status="failed"))

        assert [(e["record"]["id"], e["record"]["status"]) for e in by_id.events] == [
            (a, "queued"), (a, "failed")]
        assert [(e["record"]["id"], e["record"]["status"]) for e in wide.events] == [
            (b, "queued"), (b, "completed")]
        assert [(e["record"]["id"], e["record"]["status"]) for e in done.events] == [
            (b, "completed"), (a, "failed")]

    run(with_client(stack_state, stack_state.keys.service_role_key, body))


def test_events_arrive_in_commit_order(stack_state: StackState) -> None:
    run_id = uuid.uuid4().hex

    def mine(e: dict[str, Any]) -> bool:
        return bool(e["type"] == "INSERT" and e["record"]["payload"].get("run") == run_id)

    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        await subscribe(sb, "order", rec, "INSERT", "job_queue")
        db = await connect_db(stack_state)
        async with db:
            for i in range(50):  # 50 quick transactions
                await db.execute("insert into public.job_queue (job_type, payload) values "
                                 "('cleanup-storage', jsonb_build_object('run', %s::text, "
                                 "'seq', %s::int))", [run_id, i])
            async with db.transaction():  # one transaction, several rows
                for i in range(50, 55):
                    await db.execute("insert into public.job_queue (job_type, payload) values "
                                     "('cleanup-storage', jsonb_build_object('run', %s::text, "
                                     "'seq', %s::int))", [run_id, i])
            deadline = time.monotonic() + 20
            while len(rec.matching(mine)) < 55 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await db.execute("delete from public.job_queue where payload->>'run' = %s",
                             [run_id])
        events = rec.matching(mine)
        assert [e["record"]["payload"]["seq"] for e in events] == list(range(55))
        assert len({e["commit_timestamp"] for e in events[50:]}) == 1  # same commit

    run(with_client(stack_state, stack_state.keys.service_role_key, body))


# -- RLS -------------------------------------------------------------------------------------

def test_rls_user_receives_only_own_generations(
    stack_state: StackState, admin_conn: psycopg.Connection[Any]
) -> None:
    alice, alice_token = create_user(admin_conn, stack_state.keys)
    bob, _ = create_user(admin_conn, stack_state.keys)
    mine = create_generation(admin_conn, alice)
    theirs = create_generation(admin_conn, bob)
    keys = stack_state.keys

    async def body() -> None:
        user, worker, anon = Recorder(), Recorder(), Recorder()
        sb_user = await acreate_client(stack_state.url, keys.anon_key)
        await sb_user.realtime.set_auth(alice_token)  # what sign-in does
        sb_worker = await acreate_client(stack_state.url, keys.service_role_key)
        sb_anon = await acreate_client(stack_state.url, keys.anon_key)
        try:
            await subscribe(sb_user, "mine", user, "*", "image_generations")
            await subscribe(sb_worker, "all", worker, "*", "image_generations")
            await subscribe(sb_anon, "anon", anon, "*", "image_generations")
            db = await connect_db(stack_state)
            async with db:
                for gid in (theirs, mine, theirs, mine):
                    await db.execute("update public.image_generations set status = 'queued', "
                                     "updated_at = now() where id = %s", [gid])
                await db.execute("delete from public.image_generations where id = %s",
                                 [theirs])
                await db.execute("update public.image_generations set status = 'processing' "
                                 "where id = %s", [mine])
                await user.wait_for(is_event("UPDATE", id=mine, status="processing"))
                await worker.wait_for(is_event("UPDATE", id=mine, status="processing"))
        finally:
            for sb in (sb_user, sb_worker, sb_anon):
                await sb.remove_all_channels()

        assert [e["record"]["id"] for e in user.events if e["type"] == "UPDATE"] == [mine] * 3
        assert all(e["record"]["user_id"] == str(alice) for e in user.events
                   if e["type"] == "UPDATE")
        # DELETEs are not RLS-checked (as on Supabase): the key only.
        deletes = [e for e in user.events if e["type"] == "DELETE"]
        assert [e["old_record"] for e in deletes] == [{"id": theirs}]
        assert [e["record"]["id"] for e in worker.events if e["type"] == "UPDATE"] == [
            theirs, mine, theirs, mine, mine]
        assert anon.events == []  # anon has no SELECT on image_generations

    run(body())


# -- tokens and keys ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["expired", "foreign-secret", "garbage"])
def test_join_with_invalid_access_token_is_refused(
    stack_state: StackState, admin_conn: psycopg.Connection[Any], kind: str
) -> None:
    uid, _ = create_user(admin_conn, stack_state.keys)
    now = int(time.time())
    claims = {"sub": str(uid), "role": "authenticated", "exp": now + 3600}
    if kind == "expired":
        token = stack_state.keys.sign({**claims, "exp": now - 60})
    elif kind == "foreign-secret":
        import jwt

        token = jwt.encode(claims, "not-the-project-secret-" * 2, algorithm="HS256")
    else:
        token = "not.a.jwt"

    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        channel = sb.channel("bad-token")
        channel.on_postgres_changes("*", rec.on_change, table="job_queue")  # type: ignore[arg-type]
        await channel.subscribe(rec.on_state)
        assert rec.states[0][1] == "CHANNEL_ERROR", rec.states
        assert "InvalidJWTToken" in (rec.states[0][2] or "")
        if kind == "expired":
            assert "expired" in (rec.states[0][2] or "")

    run(with_client(stack_state, stack_state.keys.anon_key, body, token=token))


def test_socket_with_bad_apikey_is_refused(stack_state: StackState) -> None:
    from realtime import AsyncRealtimeClient

    async def body() -> None:
        client = AsyncRealtimeClient(f"{stack_state.url}/realtime/v1", token="not-a-key",
                                     max_retries=1, initial_backoff=0.1)
        with pytest.raises(Exception, match="401"):
            await client.connect()

    run(body())


# -- drop endpoint and reconnection ------------------------------------------------------------

def test_drop_endpoint_requires_service_role(stack_state: StackState) -> None:
    url = f"{stack_state.url}/_stack/realtime/drop"
    assert httpx.post(url).status_code == 401
    anon = {"Authorization": f"Bearer {stack_state.keys.anon_key}"}
    assert httpx.post(url, headers=anon).status_code == 401
    service = {"Authorization": f"Bearer {stack_state.keys.service_role_key}"}
    assert httpx.post(url, params={"pause": "-1"}, headers=service).status_code == 400
    resp = httpx.post(url, headers=service)
    assert resp.status_code == 200 and resp.json()["pause"] == 0


def test_supabase_py_resubscribes_after_a_drop(stack_state: StackState) -> None:
    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        await subscribe(sb, "drop", rec, "INSERT", "job_queue")
        dropped_at = time.monotonic()
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                f"{stack_state.url}/_stack/realtime/drop",
                headers={"Authorization": f"Bearer {stack_state.keys.service_role_key}"})
        assert resp.json()["dropped"] >= 1
        await rec.wait_state("CHANNEL_ERROR", after=dropped_at)
        await rec.wait_state("SUBSCRIBED", after=dropped_at)
        await rec.wait_subscribed(after=dropped_at)
        db = await connect_db(stack_state)
        async with db:
            cur = await db.execute("insert into public.job_queue (job_type) values "
                                   "('cleanup-storage') returning id::text")
            job_id = (await cur.fetchone() or [""])[0]
            await rec.wait_for(is_event("INSERT", id=job_id))
            await db.execute("delete from public.job_queue where id = %s", [job_id])

    run(with_client(stack_state, stack_state.keys.service_role_key, body))


def test_drop_with_pause_refuses_sockets_then_supabase_py_reconnects(
    stack_state: StackState,
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def body(sb: AsyncClient) -> None:
        rec = Recorder()
        await subscribe(sb, "paused", rec, "INSERT", "job_queue")
        dropped_at = time.monotonic()
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                f"{stack_state.url}/_stack/realtime/drop", params={"pause": "2.5"},
                headers={"Authorization": f"Bearer {stack_state.keys.service_role_key}"})
        assert resp.json() == {"dropped": resp.json()["dropped"], "pause": 2.5}
        url = (f"ws://127.0.0.1:{stack_state.api_port}/realtime/v1/websocket"
               f"?apikey={stack_state.keys.anon_key}&vsn=1.0.0")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 503
        # supabase-py: failed connects at +0 s and +1 s, the one at +3 s gets through.
        back = await rec.wait_state("SUBSCRIBED", after=dropped_at, timeout=15)
        assert back - dropped_at >= 2.5
        async with connect(url):
            pass

    run(with_client(stack_state, stack_state.keys.service_role_key, body))
