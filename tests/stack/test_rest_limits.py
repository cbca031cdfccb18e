"""/rest/v1 limits as on hosted Supabase: db-max-rows = 1000 and the API roles' statement
timeouts (anon 3 s, authenticated 8 s, service_role the authenticator's 8 s)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.stack import StackState
from tests.stack.rest_support import (
    admin_connect,
    client,
    create_user,
    rest,
    user_token,
    wait_for_schema,
)
from tests.support import StackControl

ROWS = 1500


@pytest.fixture(scope="module")
def many(stack_state: StackState) -> Iterator[str]:
    """A table of 1,500 rows, a set-returning function over it and a probe of the role's
    statement_timeout; the prefix is returned."""
    prefix = f"rl_{uuid.uuid4().hex[:8]}"
    with admin_connect(stack_state) as conn:
        conn.execute("set role postgres")
        conn.execute(f"create table public.{prefix}_rows (id int primary key)")
        conn.execute(f"insert into public.{prefix}_rows select generate_series(1, {ROWS})")
        conn.execute(
            f"create function public.{prefix}_all() returns setof public.{prefix}_rows"
            f" language sql stable as $$ select * from public.{prefix}_rows order by id $$"
        )
        conn.execute(
            f"create function public.{prefix}_timeout() returns text language sql stable"
            " as $$ select current_setting('statement_timeout') $$"
        )
        conn.execute(
            f"create function public.{prefix}_nap(s double precision) returns int"
            " language sql volatile as $$ select 1 from pg_sleep(s) $$"
        )
        conn.execute("reset role")
        wait_for_schema(
            stack_state, f"/{prefix}_rows", f"/rpc/{prefix}_all", f"/rpc/{prefix}_timeout",
            f"/rpc/{prefix}_nap",
        )
        try:
            yield prefix
        finally:
            conn.execute("set role postgres")
            conn.execute(f"drop table public.{prefix}_rows cascade")
            conn.execute(f"drop function public.{prefix}_timeout(), public.{prefix}_nap(float8)")


@pytest.fixture(scope="module")
def svc(stack_state: StackState) -> Any:
    return client(stack_state, stack_state.keys.service_role_key)


def test_a_read_returns_at_most_1000_rows(svc: Any, many: str) -> None:
    table = svc.table(f"{many}_rows")
    assert len(table.select("id").execute().data) == 1000
    assert len(table.select("id").limit(5000).execute().data) == 1000
    assert len(table.select("id").limit(7).execute().data) == 7
    tail = table.select("id").order("id").range(1200, 1999).execute().data
    assert [r["id"] for r in tail] == list(range(1201, ROWS + 1))


def test_a_capped_read_with_count_says_so_in_content_range(
    svc: Any, many: str, stack_state: StackState
) -> None:
    counted = svc.table(f"{many}_rows").select("id", count="exact").execute()
    assert (len(counted.data), counted.count) == (1000, ROWS)
    raw = rest(stack_state, "GET", f"/{many}_rows?select=id", key=stack_state.keys.anon_key,
               headers={"Prefer": "count=exact"})
    assert (raw.status_code, raw.headers["content-range"]) == (206, f"0-999/{ROWS}")
    uncounted = rest(stack_state, "GET", f"/{many}_rows?select=id",
                     key=stack_state.keys.anon_key)
    assert (uncounted.status_code, uncounted.headers["content-range"]) == (200, "0-999/*")


def test_a_set_returning_rpc_is_capped_too(svc: Any, many: str) -> None:
    assert len(svc.rpc(f"{many}_all").execute().data) == 1000


def test_each_api_role_runs_under_its_hosted_statement_timeout(
    many: str, stack_state: StackState
) -> None:
    keys = stack_state.keys
    with admin_connect(stack_state) as conn:
        uid = create_user(conn)
    as_user = user_token(keys, uid)
    seen = {
        role: client(stack_state, keys.anon_key, token).rpc(f"{many}_timeout").execute().data
        for role, token in (("anon", None), ("authenticated", as_user),
                            ("service_role", keys.service_role_key))
    }
    assert seen == {"anon": "3s", "authenticated": "8s", "service_role": "8s"}


def test_an_anon_statement_past_3_seconds_is_cancelled_with_57014(
    many: str, stack_state: StackState
) -> None:
    cancelled = rest(stack_state, "POST", f"/rpc/{many}_nap", key=stack_state.keys.anon_key,
                     json={"s": 3.3})
    assert cancelled.status_code == 500
    body = cancelled.json()
    assert (body["code"], body["message"]) == ("57014", "canceling statement due to statement timeout")


def test_max_rows_is_a_switch(svc: Any, many: str, control: StackControl) -> None:
    control.settings(max_rows=0)
    assert len(svc.table(f"{many}_rows").select("id").execute().data) == ROWS
    control.settings(max_rows=10)
    assert len(svc.rpc(f"{many}_all").execute().data) == 10
