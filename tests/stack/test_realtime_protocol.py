"""The Phoenix wire protocol of /realtime/v1/websocket, frame by frame (raw websockets), and
the pure helpers behind it. The clients' own behaviour is covered by test_realtime*.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from devstack.context import StackContext
from devstack.pg import free_port
from devstack.realtime import RealtimeHub, protocol
from devstack.realtime.bindings import BindingError, RowFilter, binding_id, parse_filter
from devstack.realtime.changes import format_commit_timestamp, wal2json_table
from devstack.stack import StackState
from tests.stack.realtime_support import create_generation, create_user
from tests.support import StackControl

pytestmark = pytest.mark.timeout(120)

JOBS = {"event": "INSERT", "schema": "public", "table": "job_queue"}


def ws_url(st: StackState, key: str, vsn: str) -> str:
    return f"ws://127.0.0.1:{st.api_port}/realtime/v1/websocket?apikey={key}&vsn={vsn}"


class Wire:
    """A raw socket speaking one vsn; frames are decoded to (join_ref, ref, topic, event,
    payload) whatever the version, and v1 frames are checked to carry a "ref" key."""

    def __init__(self, ws: ClientConnection, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self.seen: list[tuple[Any, ...]] = []
        self.pending: list[tuple[Any, ...]] = []

    async def send(self, topic: str, event: str, payload: dict[str, Any], ref: str | None,
                   join_ref: str | None = None) -> None:
        if self.vsn == protocol.V2:
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await self.ws.send(json.dumps({"topic": topic, "event": event, "payload": payload,
                                           "ref": ref, "join_ref": join_ref}))

    async def recv(self, pred: Callable[[tuple[Any, ...]], bool], timeout: float = 10.0
                   ) -> tuple[Any, ...]:
        for frame in self.pending:  # received earlier while waiting for something else
            if pred(frame):
                self.pending.remove(frame)
                return frame
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            data = json.loads(raw)
            if self.vsn == protocol.V2:
                frame = tuple(data)
            else:
                assert "ref" in data, data  # realtime-py drops frames without it
                frame = (data.get("join_ref"), data["ref"], data["topic"], data["event"],
                         data["payload"])
            self.seen.append(frame)
            if pred(frame):
                return frame
            self.pending.append(frame)

    async def join(self, topic: str, ref: str, config: dict[str, Any],
                   token: str | None = None) -> tuple[Any, ...]:
        payload: dict[str, Any] = {"config": config}
        if token is not None:
            payload["access_token"] = token
        await self.send(topic, "phx_join", payload, ref, ref)
        return await self.recv(lambda f: f[3] == "phx_reply" and f[1] == ref)


def reply_to(ref: str) -> Callable[[tuple[Any, ...]], bool]:
    return lambda f: f[3] == "phx_reply" and f[1] == ref


def change_on(topic: str) -> Callable[[tuple[Any, ...]], bool]:
    return lambda f: f[3] == "postgres_changes" and f[2] == topic


def run_ws(st: StackState, key: str, vsn: str, body: Callable[[Wire], Awaitable[None]]) -> None:
    async def main() -> None:
        async with connect(ws_url(st, key, vsn)) as ws:
            await body(Wire(ws, vsn))

    asyncio.run(main())


def insert_job(st: StackState) -> str:
    with psycopg.connect(f"host=127.0.0.1 port={st.pg_port} user=supabase_admin "
                         "dbname=postgres", autocommit=True) as conn:
        row = conn.execute("insert into public.job_queue (job_type) values ('cleanup-storage') "
                           "returning id::text").fetchone()
        assert row is not None
        return str(row[0])


# -- v1 (supabase-py framing) --------------------------------------------------------------------

def test_v1_heartbeat_join_duplicate_join_leave(stack_state: StackState) -> None:
    async def body(w: Wire) -> None:
        await w.send("phoenix", "heartbeat", {}, None)  # realtime-py's heartbeat: ref null
        assert (await w.recv(lambda f: f[3] == "phx_reply"))[4] == {"status": "ok",
                                                                    "response": {}}
        # Junk never kills the socket.
        for junk in ("not json", "[1, 2, 3]", '{"topic": 5, "event": []}', '{"payload": 1}'):
            await w.ws.send(junk)
        await w.ws.send(b"\x00\x01binary junk")
        await w.send("phoenix", "heartbeat", {}, "h1")
        assert (await w.recv(reply_to("h1")))[2] == "phoenix"

        filtered = {"event": "*", "schema": "public", "table": "job_queue",
                    "filter": "status=eq.pending"}
        reply = await w.join("realtime:raw", "1", {"postgres_changes": [JOBS, filtered]})
        response = reply[4]["response"]["postgres_changes"]
        assert [{k: v for k, v in b.items() if k != "id"} for b in response] == [JOBS, filtered]
        assert all(isinstance(b["id"], int) and b["id"] > 0 for b in response)
        system = await w.recv(lambda f: f[3] == "system")
        assert system[1] is None and system[4] == {
            "channel": "raw", "extension": "postgres_changes",
            "message": "Subscribed to PostgreSQL", "status": "ok"}

        # A second join on the topic replaces the first subscription.
        reply = await w.join("realtime:raw", "2", {"postgres_changes": [filtered]})
        only_id = reply[4]["response"]["postgres_changes"][0]["id"]
        await w.recv(lambda f: f[3] == "system" and f[0] == "2")  # the new subscription
        job_id = await asyncio.to_thread(insert_job, stack_state)
        event = await w.recv(lambda f: change_on("realtime:raw")(f)
                             and f[4]["data"].get("record", {}).get("id") == job_id)
        assert event[1] is None and event[4]["ids"] == [only_id]

        await w.send("realtime:raw", "something_new", {}, "3", "2")
        assert (await w.recv(reply_to("3")))[4]["status"] == "ok"
        await w.send("realtime:nowhere", "broadcast", {}, "4", "4")
        assert (await w.recv(reply_to("4")))[4] == {"status": "error",
                                                    "response": {"reason": "unmatched topic"}}
        await w.send("realtime:raw", "phx_leave", {}, "5", "2")
        assert (await w.recv(reply_to("5")))[4]["status"] == "ok"
        close = await w.recv(lambda f: f[3] == "phx_close")
        assert close[1] == "2" and close[2] == "realtime:raw"
        # Left: no more events for it (forget whatever arrived before the leave).
        w.pending.clear()
        await asyncio.to_thread(insert_job, stack_state)
        await w.send("phoenix", "heartbeat", {}, "h2")
        await asyncio.sleep(0.5)
        await w.recv(reply_to("h2"))
        with pytest.raises(TimeoutError):
            await w.recv(change_on("realtime:raw"), timeout=1.0)

    run_ws(stack_state, stack_state.keys.service_role_key, protocol.V1, body)


def test_v1_join_errors(stack_state: StackState) -> None:
    async def body(w: Wire) -> None:
        bad_column = {**JOBS, "filter": "nope=eq.1"}
        reply = await w.join("realtime:e1", "1", {"postgres_changes": [bad_column]})
        assert reply[4]["status"] == "error" and "nope" in reply[4]["response"]["reason"]
        bad_value = {**JOBS, "filter": "id=eq.not-a-uuid"}
        reply = await w.join("realtime:e2", "2", {"postgres_changes": [bad_value]})
        assert reply[4]["status"] == "error"
        bad_op = {**JOBS, "filter": "id=like.x"}
        reply = await w.join("realtime:e3", "3", {"postgres_changes": [bad_op]})
        assert reply[4]["status"] == "error" and "operator" in reply[4]["response"]["reason"]
        reply = await w.join("realtime:e4", "4", {"postgres_changes": [JOBS]}, token="x.y.z")
        assert reply[4]["status"] == "error"
        assert reply[4]["response"]["reason"].startswith("InvalidJWTToken")
        # No postgres_changes: an empty response, no system message.
        reply = await w.join("realtime:plain", "5", {"broadcast": {"self": False}})
        assert reply[4] == {"status": "ok", "response": {}}

    run_ws(stack_state, stack_state.keys.service_role_key, protocol.V1, body)


def _system(topic: str) -> Callable[[tuple[Any, ...]], bool]:
    return lambda f: f[3] == "system" and f[2] == topic


def test_join_is_answered_before_the_subscription_exists(
    stack_state: StackState, control: StackControl
) -> None:
    """As the real server: ok to phx_join at once, "Subscribed to PostgreSQL" once the
    subscription exists; a row committed in between is never delivered."""
    control.settings(realtime_subscribe_delay=1.5)

    async def body(w: Wire) -> None:
        await w.join("realtime:ready", "1", {"postgres_changes": [JOBS]})
        replied = time.monotonic()
        early = await asyncio.to_thread(insert_job, stack_state)
        system = await w.recv(_system("realtime:ready"))
        assert time.monotonic() - replied >= 1.4
        assert system[4]["message"] == "Subscribed to PostgreSQL"
        late = await asyncio.to_thread(insert_job, stack_state)
        event = await w.recv(change_on("realtime:ready"))
        assert event[4]["data"]["record"]["id"] == late  # the first change it gets
        assert all(f[4]["data"]["record"]["id"] != early for f in w.seen
                   if f[3] == "postgres_changes")

    run_ws(stack_state, stack_state.keys.service_role_key, protocol.V1, body)


def test_a_table_outside_the_publication_gets_the_servers_error_and_no_retry(
    stack_state: StackState, admin_conn: psycopg.Connection[Any]
) -> None:
    table = f"rt_unpub_{uuid.uuid4().hex[:8]}"
    admin_conn.execute(f"create table public.{table} (id int primary key)")
    binding = {"event": "INSERT", "schema": "public", "table": table}
    filtered = {"event": "*", "schema": "public", "table": table, "filter": "id=eq.5"}

    async def body(w: Wire) -> None:
        reply = await w.join("realtime:unpub", "1", {"postgres_changes": [binding]})
        assert reply[4]["status"] == "ok"  # the join itself succeeds
        error = await w.recv(_system("realtime:unpub"))
        assert error[1] is None and error[4] == {
            "channel": "unpub", "extension": "postgres_changes", "status": "error",
            "message": "Unable to subscribe to changes with given parameters. Please check "
                       "Realtime is enabled for the given connect parameters: [event: INSERT, "
                       f"schema: public, table: {table}, filters: [], select: nil]"}
        await w.join("realtime:unpub2", "2", {"postgres_changes": [filtered]})
        error = await w.recv(_system("realtime:unpub2"))
        assert error[4]["message"].endswith(
            f'[event: *, schema: public, table: {table}, filters: [{{"id", "eq", "5", false}}], '
            "select: nil]")
        # No retry: publishing the table now does not revive the channel.
        admin_conn.execute(f"alter publication supabase_realtime add table public.{table}")
        admin_conn.execute(f"insert into public.{table} values (5)")
        with pytest.raises(TimeoutError):
            await w.recv(lambda f: f[2] in ("realtime:unpub", "realtime:unpub2")
                         and f[3] in ("system", "postgres_changes"), timeout=2.0)
        # A new join does subscribe.
        await w.join("realtime:pub", "3", {"postgres_changes": [binding]})
        assert (await w.recv(_system("realtime:pub")))[4]["status"] == "ok"
        admin_conn.execute(f"insert into public.{table} values (6)")
        assert (await w.recv(change_on("realtime:pub")))[4]["data"]["record"] == {"id": 6}

    try:
        run_ws(stack_state, stack_state.keys.service_role_key, protocol.V1, body)
    finally:
        admin_conn.execute(f"drop table public.{table}")


def test_sb_keys_are_taken_as_the_tenant_token(stack_state: StackState) -> None:
    async def body(w: Wire) -> None:
        await w.join("realtime:sb", "1", {"postgres_changes": [JOBS]},
                     token=stack_state.keys.secret_key)
        assert (await w.recv(_system("realtime:sb")))[4]["status"] == "ok"
        job_id = await asyncio.to_thread(insert_job, stack_state)
        event = await w.recv(change_on("realtime:sb"))
        assert event[4]["data"]["record"]["id"] == job_id  # service_role: sees the queue

    run_ws(stack_state, stack_state.keys.publishable_key, protocol.V1, body)

    async def refused() -> None:
        with pytest.raises(InvalidStatus) as bad:
            async with connect(ws_url(stack_state, "sb_publishable_nope", protocol.V1)):
                pass
        assert bad.value.response.status_code == 401

    asyncio.run(refused())


def test_bad_apikey_or_vsn_refuses_the_handshake(stack_state: StackState) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as bad_key:
            async with connect(ws_url(stack_state, "garbage", protocol.V1)):
                pass
        assert bad_key.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as bad_vsn:
            async with connect(ws_url(stack_state, stack_state.keys.anon_key, "9.9.9")):
                pass
        assert bad_vsn.value.response.status_code == 400

    asyncio.run(main())


# -- v2 (supabase-js framing) ------------------------------------------------------------------

def test_v2_access_token_upgrades_an_anonymous_channel(
    stack_state: StackState, admin_conn: psycopg.Connection[Any]
) -> None:
    uid, token = create_user(admin_conn, stack_state.keys)
    gid = create_generation(admin_conn, uid)
    gen = {"event": "UPDATE", "schema": "public", "table": "image_generations",
           "filter": f"id=eq.{gid}"}

    def touch() -> None:
        admin_conn.execute("update public.image_generations set updated_at = now() "
                           "where id = %s", [gid])

    async def body(w: Wire) -> None:
        await w.send("phoenix", "heartbeat", {}, "1")
        assert await w.recv(reply_to("1")) == (None, "1", "phoenix", "phx_reply",
                                               {"status": "ok", "response": {}})
        # Joined without access_token (as supabase-js's first join): the anon apikey.
        assert (await w.join("realtime:gen", "2", {"postgres_changes": [gen]}))[4][
            "status"] == "ok"
        sentinel = await w.join("realtime:jobs", "3", {"postgres_changes": [JOBS]},
                                token=stack_state.keys.service_role_key)
        assert sentinel[4]["status"] == "ok"
        for topic in ("realtime:gen", "realtime:jobs"):  # both subscriptions exist
            assert (await w.recv(_system(topic)))[4]["status"] == "ok"
        await asyncio.to_thread(touch)
        job_id = await asyncio.to_thread(insert_job, stack_state)
        await w.recv(lambda f: change_on("realtime:jobs")(f)
                     and f[4]["data"]["record"]["id"] == job_id)
        assert not [f for f in w.seen if change_on("realtime:gen")(f)]  # anon sees nothing

        await w.send("realtime:gen", "access_token", {"access_token": token}, "4", "2")
        await w.recv(reply_to("4"))
        await asyncio.to_thread(touch)
        event = await w.recv(change_on("realtime:gen"))
        assert event[:4] == (None, None, "realtime:gen", "postgres_changes")
        assert event[4]["data"]["record"]["id"] == gid
        assert event[4]["data"]["old_record"] == {"id": gid}

        # An invalid token shuts the channel down: system error, then phx_close.
        await w.send("realtime:gen", "access_token", {"access_token": "bad"}, "5", "2")
        system = await w.recv(lambda f: f[3] == "system" and f[4]["status"] == "error")
        assert system[2] == "realtime:gen" and "InvalidJWTToken" in system[4]["message"]
        assert (await w.recv(lambda f: f[3] == "phx_close"))[2] == "realtime:gen"

    run_ws(stack_state, stack_state.keys.anon_key, protocol.V2, body)


def test_v2_broadcast_relay_and_self(stack_state: StackState) -> None:
    async def main() -> None:
        key = stack_state.keys.anon_key
        async with connect(ws_url(stack_state, key, protocol.V2)) as a_ws, \
                connect(ws_url(stack_state, key, protocol.V2)) as b_ws:
            a, b = Wire(a_ws, protocol.V2), Wire(b_ws, protocol.V2)
            await a.join("realtime:room", "1", {"broadcast": {"self": True, "ack": True}})
            await b.join("realtime:room", "1", {"broadcast": {"self": False}})
            message = {"type": "broadcast", "event": "ping", "payload": {"n": 1}}
            await a.send("realtime:room", "broadcast", message, "2", "1")
            assert (await a.recv(reply_to("2")))[4]["status"] == "ok"
            for w in (a, b):  # a gets its own message back (self), b gets it relayed
                got = await w.recv(lambda f: f[3] == "broadcast")
                assert got == (None, None, "realtime:room", "broadcast", message)
            # supabase-js sends broadcasts as binary frames (kind 3).
            parts = [b"", b"", b"realtime:room", b"pong", b""]
            frame = bytes([3, *map(len, parts), 1]) + b"".join(parts) + b'{"n": 2}'
            await b.ws.send(frame)
            got = await a.recv(lambda f: f[3] == "broadcast")
            assert got[4] == {"type": "broadcast", "event": "pong", "payload": {"n": 2}}

    asyncio.run(main())


# -- pure helpers ---------------------------------------------------------------------------------

def test_framing_round_trips() -> None:
    msg = protocol.Message("realtime:x", "phx_join", {"a": [1]}, "7", "7")
    for vsn in (protocol.V1, protocol.V2):
        assert protocol.decode_text(protocol.encode(vsn, msg), vsn) == msg
    v1 = json.loads(protocol.encode(protocol.V1, protocol.Message("t", "system", {}, None)))
    assert v1["ref"] is None and "ref" in v1
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_text('{"topic": "t"}', protocol.V1)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_text('["1", "1", "t", "e"]', protocol.V2)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_binary(bytes([4, 0, 0, 0, 0, 0, 1]))


def test_filters_parse_and_compare() -> None:
    assert parse_filter("id=eq.5") == RowFilter("id", "eq", ("5",))
    assert parse_filter('status=in.(a, "b,c")') == RowFilter("status", "in", ("a", "b,c"))
    assert parse_filter("note=eq.a.b=c") == RowFilter("note", "eq", ("a.b=c",))
    for bad in ("id", "id=5", "id=like.x", "=eq.1", "s=in.a,b", "s=in.()"):
        with pytest.raises(BindingError):
            parse_filter(bad)
    gt = RowFilter("n", "gt", ("5",))
    assert gt.matches({"n": 6}, [5]) and not gt.matches({"n": 5}, [5])
    assert not gt.matches({"n": None}, [5]) and not gt.matches({"n": "6"}, [5])
    neq = RowFilter("b", "neq", ("true",))
    assert neq.matches({"b": False}, [True]) and not neq.matches({"b": True}, [True])
    assert not RowFilter("b", "eq", ("1",)).matches({"b": True}, [1])  # no bool/int mixing
    inn = RowFilter("s", "in", ("a", "b"))
    assert inn.matches({"s": "b"}, ["a", "b"]) and not inn.matches({"s": "c"}, ["a", "b"])
    ids = {binding_id(e, "public", "t", None) for e in ("*", "INSERT", "UPDATE", "DELETE")}
    assert len(ids) == 4 and all(0 < i < 2**31 for i in ids)


def test_wal2json_helpers() -> None:
    assert wal2json_table("public", "jobs") == "public.jobs"
    assert wal2json_table("my schema", "a.b,c*") == "my\\ schema.a\\.b\\,c\\*"
    assert format_commit_timestamp("2024-01-02 03:04:05.678901+00") == "2024-01-02T03:04:05.678Z"
    assert format_commit_timestamp("2024-01-02 05:04:05+02") == "2024-01-02T03:04:05.000Z"



# -- a slow client never stalls the hub -------------------------------------------------------

def test_client_that_stops_reading_is_dropped(stack_state: StackState, tmp_path: Path) -> None:
    """An in-process hub (same code, small send queue) on the session database: a socket
    that never reads is dropped once its queue overflows; the others carry on."""
    ctx = StackContext(keys=stack_state.keys, pg_port=stack_state.pg_port,
                       public_url=stack_state.url, storage_root=tmp_path)
    hub = RealtimeHub(ctx)
    hub.send_queue_size = 8

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ctx.api_pool = AsyncConnectionPool(ctx.dsn("authenticator"), min_size=1, open=False)
        ctx.admin_pool = AsyncConnectionPool(ctx.dsn("supabase_admin"), min_size=1, open=False)
        await ctx.api_pool.open(wait=True)
        await ctx.admin_pool.open(wait=True)
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await ctx.api_pool.close()
            await ctx.admin_pool.close()

    app = Starlette(routes=[WebSocketRoute("/realtime/v1/websocket", hub.websocket_endpoint)],
                    lifespan=lifespan)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           ws="websockets-sansio", log_level="warning"))
    url = (f"ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={stack_state.keys.anon_key}"
           f"&vsn={protocol.V2}")

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            async with connect(url, max_queue=1, close_timeout=0.5) as slow_ws, \
                    connect(url) as fast_ws:
                slow, fast = Wire(slow_ws, protocol.V2), Wire(fast_ws, protocol.V2)
                await slow.join("realtime:flood", "1", {"broadcast": {"self": False}})
                await fast.join("realtime:flood", "1", {"broadcast": {"self": False}})
                assert len(hub.connections) == 2
                blob = {"type": "broadcast", "event": "blob", "payload": {"x": "y" * 65536}}
                deadline = time.monotonic() + 30
                while len(hub.connections) == 2 and time.monotonic() < deadline:
                    for _ in range(20):
                        await fast.send("realtime:flood", "broadcast", blob, None, "1")
                    await asyncio.sleep(0.01)
                assert len(hub.connections) == 1  # the slow one is gone...
                await fast.send("phoenix", "heartbeat", {}, "hb")
                await fast.recv(reply_to("hb"))  # ...and the other still served
        finally:
            server.should_exit = True
            await serving

    asyncio.run(main())
