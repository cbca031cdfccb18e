"""/rest/v1 under load: 50 concurrent supabase-py clients for 20 s, no errors, no leaks."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from postgrest.exceptions import APIError

from devstack.stack import StackState
from tests.stack.rest_support import (
    RestObjects,
    admin_connect,
    authenticator_activity,
    client,
    rest_objects,
)

CLIENTS = 50
DURATION = 20.0
POOL_MAX = 40  # devstack.app: the api pool's max_size
LISTENERS = 1  # PostgREST's LISTEN pgrst connection, also as authenticator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def objs(stack_state: StackState) -> Iterator[RestObjects]:
    with rest_objects(stack_state) as created:
        yield created


def _one_round(client: Any, objs: RestObjects, worker: int, n: int, ops: Counter[str]) -> None:
    assert client.rpc(objs.fn("add"), {"a": n, "b": worker}).execute().data == n + worker
    ops["rpc"] += 1
    rows = client.rpc(objs.fn("upto"), {"n": 3}).select("id").order("id").execute().data
    assert [r["id"] for r in rows] == [1, 2, 3]
    ops["rpc-set"] += 1
    models = client.table("models").select("id,name").eq("is_active", True).limit(3).execute()
    assert len(models.data) == 3
    ops["select"] += 1
    row_id = 10_000 + worker * 1_000_000 + n
    inserted = client.table(objs.items).insert({"id": row_id, "name": f"w{worker}"}).execute()
    assert inserted.data[0]["id"] == row_id
    deleted = client.table(objs.items).delete().eq("id", row_id).execute()
    assert [r["id"] for r in deleted.data] == [row_id]
    ops["write"] += 2
    try:
        client.table(objs.items).select("id").eq("id", -1).single().execute()
    except APIError as err:
        assert err.code == "PGRST116"
        ops["expected-error"] += 1
    else:
        raise AssertionError("single() on no row did not fail")


def test_concurrent_clients(stack_state: StackState, objs: RestObjects) -> None:
    with admin_connect(stack_state) as conn:
        before = authenticator_activity(conn)
    errors: list[str] = []
    totals: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def worker(index: int) -> None:
        sb = client(stack_state, stack_state.keys.service_role_key)
        ops: Counter[str] = Counter()
        start.wait()
        deadline = time.monotonic() + DURATION
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                _one_round(sb, objs, index, n, ops)
            except Exception as exc:  # collected and asserted below
                with lock:
                    errors.append(f"client {index} round {n}: {type(exc).__name__}: {exc}")
                break
        with lock:
            totals.update(ops)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(CLIENTS)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION + 60)
    elapsed = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert errors == [], errors[:5]
    requests = sum(totals.values())
    print(
        f"\n{requests} requests by {CLIENTS} clients in {elapsed:.1f}s "
        f"({requests / elapsed:.0f} req/s): {dict(totals)}"
    )
    assert totals["expected-error"] >= CLIENTS  # every client completed rounds
    assert requests >= CLIENTS * 6

    time.sleep(0.5)
    with admin_connect(stack_state) as conn:
        after = authenticator_activity(conn)
        busy = conn.execute(
            "select count(*) from pg_stat_activity where usename = 'authenticator' "
            "and state <> 'idle'"
        ).fetchone()
        leftovers = conn.execute(
            f'select count(*) from public."{objs.items}" where id >= 10000'  # prefix is ours
        ).fetchone()
    assert after[1] == 0 and before[1] == 0, (before, after)  # no idle-in-transaction
    assert after[0] <= POOL_MAX + LISTENERS, (before, after)
    assert busy == (0,) and leftovers == (0,)
