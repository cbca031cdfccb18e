"""supabase-js (2.119.0, Node) against the session stack's Realtime: tests/js/realtime.mjs.

The script subscribes like the Picture app (a signed-in user watching UPDATEs of one of their
generations, filtered by id) and like a service-role backend (job INSERTs, generation
DELETEs), and reports every status and change as a JSON line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from devstack.stack import StackState
from tests.stack.realtime_support import JsClient, create_generation, create_user, node_available

pytestmark = [
    pytest.mark.js,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not node_available(), reason="needs node and tests/js/node_modules"),
]

CHANNELS = ("gen", "jobs", "deletes")


def status(channel: str, value: str) -> Any:
    return lambda i: i.get("kind") == "status" and i["channel"] == channel and i["status"] == value


def subscribed(channel: str) -> Any:
    """The server's confirmation that changes now flow (after the SUBSCRIBED status)."""
    return lambda i: (i.get("kind") == "system" and i["channel"] == channel
                      and i["status"] == "ok" and i["message"] == "Subscribed to PostgreSQL")


def change(channel: str, event: str, **new: Any) -> Any:
    def pred(i: dict[str, Any]) -> bool:
        if i.get("kind") != "change" or i["channel"] != channel or i["eventType"] != event:
            return False
        values = i["new"] if event != "DELETE" else i["old"]
        return all(values.get(k) == v for k, v in new.items())

    return pred


@pytest.fixture
def js_setup(stack_state: StackState, admin_conn: psycopg.Connection[Any]
             ) -> Iterator[tuple[JsClient, dict[str, str]]]:
    alice, token = create_user(admin_conn, stack_state.keys)
    bob, _ = create_user(admin_conn, stack_state.keys)
    rows = {
        "gen": create_generation(admin_conn, alice, width=1024, guidance_scale=3.5),
        "sibling": create_generation(admin_conn, alice),  # same user, not watched
        "foreign": create_generation(admin_conn, bob),
        "doomed": create_generation(admin_conn, None),
    }
    js = JsClient({**stack_state.env(), "USER_JWT": token, "GEN_ID": rows["gen"]})
    try:
        for name in CHANNELS:
            js.expect(status(name, "SUBSCRIBED"))
            js.expect(subscribed(name))
        yield js, rows
    finally:
        js.close()
        admin_conn.execute("delete from public.image_generations where id = any(%s::uuid[])",
                           [list(rows.values())])


def test_supabase_js_update_insert_delete(
    js_setup: tuple[JsClient, dict[str, str]], admin_conn: psycopg.Connection[Any]
) -> None:
    js, rows = js_setup
    gen = rows["gen"]
    for gid in (rows["sibling"], rows["foreign"], gen):
        admin_conn.execute("update public.image_generations set status = 'processing' "
                           "where id = %s", [gid])
    update = js.expect(change("gen", "UPDATE", id=gen, status="processing"))
    assert update["old"] == {"id": gen}
    assert update["table"] == "image_generations" and update["errors"] is None
    assert update["new"]["width"] == 1024 and update["new"]["guidance_scale"] == 3.5
    assert update["new"]["prompt"] == "a lighthouse"
    # The filter (and RLS for bob's row) kept the other rows out; they committed first.
    assert [c["new"]["id"] for c in js.changes("gen")] == [gen]

    job = admin_conn.execute("insert into public.job_queue (job_type, payload) values "
                             "('generate-image', '{\"k\": [1, 2]}') returning id::text"
                             ).fetchone()
    assert job is not None
    inserted = js.expect(change("jobs", "INSERT", id=job[0]))
    assert inserted["new"]["payload"] == {"k": [1, 2]} and inserted["old"] == {}
    admin_conn.execute("delete from public.job_queue where id = %s", [job[0]])

    admin_conn.execute("delete from public.image_generations where id = %s", [rows["doomed"]])
    deleted = js.expect(change("deletes", "DELETE", id=rows["doomed"]))
    assert deleted["old"] == {"id": rows["doomed"]} and deleted["new"] == {}
    assert deleted["commit_timestamp"].endswith("Z")


def test_supabase_js_resubscribes_after_drop(
    js_setup: tuple[JsClient, dict[str, str]], stack_state: StackState,
    admin_conn: psycopg.Connection[Any],
) -> None:
    js, rows = js_setup
    dropped_at = time.monotonic()
    resp = httpx.post(f"{stack_state.url}/_stack/realtime/drop",
                      headers={"Authorization": f"Bearer {stack_state.keys.service_role_key}"})
    assert resp.status_code == 200 and resp.json()["dropped"] >= 2  # js's two sockets
    for name in CHANNELS:
        err = js.expect(status(name, "CHANNEL_ERROR"), after=dropped_at)
        assert "1006" in (err["error"] or "")  # an abrupt close, no close frame
        back = js.expect(status(name, "SUBSCRIBED"), after=dropped_at)
        assert back["_mono"] - dropped_at < 8  # realtime-js retries after 1 s, then 2, 5, 10
        js.expect(subscribed(name), after=dropped_at)
    admin_conn.execute("update public.image_generations set status = 'completed' where id = %s",
                       [rows["gen"]])
    js.expect(change("gen", "UPDATE", id=rows["gen"], status="completed"))
