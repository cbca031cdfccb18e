from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Fake, Picture


@pytest.fixture
def picture(stack_state: StackState) -> Picture:
    return Picture(stack_state)


@pytest.fixture
def fake(stack_state: StackState) -> Iterator[Fake]:
    f = Fake(stack_state)
    f.reset()
    yield f
    f.reset()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def quiet_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    """Start from an empty queue so a test's workers only see that test's jobs."""
    admin_conn.execute("delete from public.job_queue")
    yield
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")


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
