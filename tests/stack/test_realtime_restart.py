"""What the official clients do when the Realtime server process restarts.

A separate stack (its own folder, Postgres and ports) so the session stack is untouched.
The server process is stopped and started again on the same port, twice:

1. a quick restart (a few seconds down): supabase-js and supabase-py both resubscribe by
   themselves and receive events again;
2. a long outage (20 s down): supabase-js resubscribes (it retries forever); supabase-py
   gives up for good after ``max_retries=5`` failed connects (1 + 2 + 4 + 8 s of backoff),
   so it never resubscribes. Changes made while the server was down are not replayed.

The measured timings are printed (run with ``-s``) and summarised in docs/realtime-clients.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from supabase import acreate_client

from devstack.stack import Stack, StackState
from tests.stack.realtime_support import (
    JsClient,
    Recorder,
    create_generation,
    create_user,
    node_available,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.js,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not node_available(), reason="needs node and tests/js/node_modules"),
]

LONG_OUTAGE = 20.0  # > 1 + 2 + 4 + 8 s: supabase-py's whole retry budget


class ConnectLog(logging.Handler):
    """supabase-py's reconnect attempts, from its own log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failures: list[float] = []
        self.gave_up: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Connection attempt failed"):
            self.failures.append(time.monotonic())
        elif message.startswith("Connection failed permanently"):
            self.gave_up.append(time.monotonic())


@pytest.fixture
def restart_stack(tmp_path: Path) -> Iterator[tuple[Stack, StackState]]:
    stack = Stack(tmp_path / "restart-stack", fast=True)
    state = stack.up()
    try:
        yield stack, state
    finally:
        stack.down()


def is_update(status: str) -> Any:
    return lambda e: e["type"] == "UPDATE" and e["record"]["status"] == status


def js_update(status: str) -> Any:
    return lambda i: i.get("kind") == "change" and i["new"].get("status") == status


def js_subscribed(i: dict[str, Any]) -> bool:
    """The server's "Subscribed to PostgreSQL" (it follows the client's SUBSCRIBED)."""
    return (i.get("kind") == "system" and i["status"] == "ok"
            and i["message"] == "Subscribed to PostgreSQL")


def test_clients_across_server_restarts(restart_stack: tuple[Stack, StackState]) -> None:
    stack, st = restart_stack
    with psycopg.connect(f"host=127.0.0.1 port={st.pg_port} user=supabase_admin "
                         "dbname=postgres", autocommit=True) as conn:
        alice, token = create_user(conn, st.keys)
        gen = create_generation(conn, alice)

        def set_status(status: str) -> None:
            conn.execute("update public.image_generations set status = %s where id = %s",
                         [status, gen])

        js = JsClient({**st.env(), "USER_JWT": token, "GEN_ID": gen, "SCENARIO": "gen"})
        connect_log = ConnectLog()
        py_logger = logging.getLogger("realtime._async.client")
        py_logger.addHandler(connect_log)
        py_logger.setLevel(logging.DEBUG)
        try:
            report = asyncio.run(_scenario(stack, st, js, gen, set_status, connect_log))
        finally:
            py_logger.removeHandler(connect_log)
            js.close()
    print("\nrealtime restart measurements:", report)


async def _scenario(stack: Stack, st: StackState, js: JsClient, gen: str,
                    set_status: Any, connect_log: ConnectLog) -> dict[str, Any]:
    rec = Recorder()
    sb = await acreate_client(st.url, st.keys.service_role_key)  # defaults: 5 retries, 1 s
    channel = sb.channel("watch")
    channel.on_postgres_changes("UPDATE", rec.on_change, table="image_generations",  # type: ignore[arg-type]
                                filter=f"id=eq.{gen}")
    channel.on_system(rec.on_system)
    await channel.subscribe(rec.on_state)
    await rec.wait_subscribed()
    await asyncio.to_thread(js.expect, js_subscribed)
    report: dict[str, Any] = {}
    try:
        # 1. Quick restart: both clients come back by themselves.
        t0 = time.monotonic()
        await asyncio.to_thread(stack.stop_server)
        await asyncio.to_thread(stack.start_server)
        t_up = time.monotonic()
        js_back = (await asyncio.to_thread(js.expect, js_subscribed, 30.0, t0))["_mono"]
        py_back = await rec.wait_state("SUBSCRIBED", after=t0, timeout=30)
        await rec.wait_subscribed(after=t0)
        await asyncio.to_thread(set_status, "queued")
        await rec.wait_for(is_update("queued"))
        await asyncio.to_thread(js.expect, js_update("queued"))
        report["quick"] = {
            "server_down_s": round(t_up - t0, 2),
            "js_resubscribed_after_up_s": round(js_back - t_up, 2),
            "py_resubscribed_after_up_s": round(py_back - t_up, 2),
            "py_failed_connects": len([t for t in connect_log.failures if t >= t0]),
        }
        assert not connect_log.gave_up

        # 2. Long outage: supabase-js keeps trying, supabase-py gives up for good.
        t1 = time.monotonic()
        await asyncio.to_thread(stack.stop_server)
        await asyncio.sleep(2)
        await asyncio.to_thread(set_status, "processing")  # committed while nobody decodes
        await asyncio.sleep(LONG_OUTAGE - 2)
        await asyncio.to_thread(stack.start_server)
        t_up2 = time.monotonic()
        js_back2 = (await asyncio.to_thread(js.expect, js_subscribed, 30.0, t1))["_mono"]
        await asyncio.to_thread(set_status, "completed")
        await asyncio.to_thread(js.expect, js_update("completed"), 15.0, t1)
        # The change committed while the server was down is never replayed.
        assert [c["new"]["status"] for c in js.changes("gen", after=t1)] == ["completed"]
        await asyncio.sleep(3)  # supabase-py would have had time to deliver it too

        failures = [t - t1 for t in connect_log.failures if t >= t1]
        report["long"] = {
            "server_down_s": round(t_up2 - t1, 2),
            "js_resubscribed_after_up_s": round(js_back2 - t_up2, 2),
            "py_failed_connects_at_s": [round(f, 1) for f in failures],
            "py_gave_up_at_s": [round(t - t1, 1) for t in connect_log.gave_up],
        }
        assert len(failures) == 5 and len(connect_log.gave_up) == 1
        assert connect_log.gave_up[0] - t1 < LONG_OUTAGE
        assert not [s for s in rec.states if s[0] >= t1 and s[1] == "SUBSCRIBED"]
        assert not rec.matching(is_update("completed")) and not sb.realtime.is_connected
        assert not rec.matching(is_update("processing"))
    finally:
        await sb.realtime.close()
    return report


def test_events_resume_after_postgres_restarts(restart_stack: tuple[Stack, StackState]) -> None:
    """Postgres restarts under a running server: the websocket stays up, the WAL poller
    reconnects with a new temporary slot and the pools replace their broken connections."""
    stack, st = restart_stack
    dsn = f"host=127.0.0.1 port={st.pg_port} user=supabase_admin dbname=postgres"

    def insert_job(priority: int) -> str:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("insert into public.job_queue (job_type, priority) values "
                               "('cleanup-storage', %s) returning id::text", [priority]
                               ).fetchone()
            assert row is not None
            return str(row[0])

    def our_slot() -> list[str]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("select slot_name from pg_replication_slots where temporary "
                                "and active and slot_name like 'devstack_realtime_%'"
                                ).fetchall()
            return [r[0] for r in rows]

    async def main() -> None:
        rec = Recorder()
        sb = await acreate_client(st.url, st.keys.service_role_key)
        try:
            channel = sb.channel("jobs")
            channel.on_postgres_changes("INSERT", rec.on_change, table="job_queue")  # type: ignore[arg-type]
            channel.on_system(rec.on_system)
            await channel.subscribe(rec.on_state)
            await rec.wait_subscribed()
            first = await asyncio.to_thread(insert_job, 1)
            await rec.wait_for(lambda e: e["record"]["id"] == first)
            slot_before = await asyncio.to_thread(our_slot)
            assert len(slot_before) == 1

            await asyncio.to_thread(stack.cluster.restart)
            deadline = time.monotonic() + 30
            slot_after: list[str] = []
            while time.monotonic() < deadline:
                slot_after = await asyncio.to_thread(our_slot)
                if slot_after:
                    break
                await asyncio.sleep(0.2)
            assert len(slot_after) == 1 and slot_after != slot_before

            second = await asyncio.to_thread(insert_job, 7)
            event = await rec.wait_for(lambda e: e["record"]["id"] == second, timeout=15)
            # Typed by Postgres again (the pools recovered): to_jsonb's timestamp format,
            # not wal2json's "2024-01-01 00:00:00+00".
            assert event["record"]["priority"] == 7 and event["record"]["created_at"][10] == "T"
            assert [s for _, s, _ in rec.states] == ["SUBSCRIBED"]  # the socket never dropped
        finally:
            await sb.remove_all_channels()

    asyncio.run(main())
