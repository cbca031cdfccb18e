from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest


@pytest.fixture
def status_log(admin_conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """Every status a generation passes through, in commit order (a test-only trigger)."""
    admin_conn.execute(
        """
        create table if not exists public._test_status_log (
          seq bigserial primary key, generation_id uuid, status text, error_message text,
          at timestamptz default clock_timestamp());
        create or replace function public._test_log_status() returns trigger language plpgsql security definer as $$
        begin
          if tg_op = 'INSERT' or new.status is distinct from old.status then
            insert into public._test_status_log (generation_id, status, error_message)
            values (new.id, new.status, new.error_message);
          end if;
          return new;
        end $$;
        drop trigger if exists _test_log_status on public.image_generations;
        create trigger _test_log_status after insert or update on public.image_generations
          for each row execute function public._test_log_status();
        truncate public._test_status_log;
        """
    )
    yield admin_conn
    admin_conn.execute(
        "drop trigger if exists _test_log_status on public.image_generations;"
        "drop function if exists public._test_log_status() cascade;"
        "drop table if exists public._test_status_log;"
    )


def statuses(conn: psycopg.Connection, gid: str) -> list[str]:
    rows = conn.execute(
        "select status from public._test_status_log where generation_id = %s order by seq", (gid,)
    ).fetchall()
    return [r[0] for r in rows]
