"""Shared fixtures: one real PostgreSQL 15 + local Supabase stack per test session.

Nothing here is mocked: the stack is the project's own Supabase-compatible server in front
of a real Postgres, started in a temporary folder and stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.stack import Stack, StackState
from tests.support import Fake, Picture, StackControl


@pytest.fixture(scope="session")
def stack_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="picture-stack-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_root: Path) -> Iterator[Stack]:
    st = Stack(stack_root / "stack", fast=True)
    st.up()
    yield st
    st.down()


@pytest.fixture(scope="session")
def stack_state(stack: Stack) -> StackState:
    return stack.state()


@pytest.fixture(scope="session")
def stack_env(stack_state: StackState) -> dict[str, str]:
    return stack_state.env()


@pytest.fixture
def admin_conn(stack_state: StackState) -> Iterator[psycopg.Connection]:
    """A superuser connection to the stack's database (for assertions, never for the code under test)."""
    with psycopg.connect(
        f"host=127.0.0.1 port={stack_state.pg_port} user=supabase_admin dbname=postgres",
        autocommit=True,
    ) as conn:
        yield conn


@pytest.fixture
def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.test"


# -- fixtures shared by the suites that run workers against the session stack ------
@pytest.fixture
def picture(stack_state: StackState) -> Picture:
    return Picture(stack_state)


@pytest.fixture
def fake(stack_state: StackState) -> Iterator[Fake]:
    """The fake Replicate's control API, reset before and after the test."""
    f = Fake(stack_state)
    f.reset()
    yield f
    f.reset()


@pytest.fixture
def control(stack_state: StackState) -> Iterator[StackControl]:
    """The stack's switches and gateway faults; both back to the defaults after the test."""
    c = StackControl(stack_state)
    defaults = c.settings()
    c.reset_faults()
    yield c
    c.reset_faults()
    c.settings(**defaults)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def limit_of(admin_conn: psycopg.Connection) -> Iterator[Callable[[int], None]]:
    """``limit_of(n)``: the database's per-user in-flight limit
    (``public.picture_settings.max_in_flight_per_user``) is n for this test, then back."""
    before = admin_conn.execute(
        "select max_in_flight_per_user from public.picture_settings"
    ).fetchone()
    assert before is not None

    def set_limit(limit: int) -> None:
        admin_conn.execute("update public.picture_settings set max_in_flight_per_user = %s",
                           (limit,))

    yield set_limit
    set_limit(int(before[0]))


@pytest.fixture
def no_in_flight_limit(limit_of: Callable[[int], None]) -> None:
    """For suites that drive the pipeline with dozens of generations of one user (the limit
    itself is tested in tests/db, tests/functions and tests/security)."""
    limit_of(0)


@pytest.fixture
def quiet_queue(admin_conn: psycopg.Connection) -> Iterator[None]:
    """Start from an empty queue so a test's workers only see that test's jobs, and from an
    empty registry: a worker an earlier test killed would stay a live peer for 45 s, and
    Realtime wake-ups ranked to it would wait for a poll (docs/operations.md)."""
    admin_conn.execute("delete from public.job_queue")
    admin_conn.execute("update public.job_workers set stopped_at = now() where stopped_at is null")
    yield
    admin_conn.execute("delete from public.job_queue where status in ('pending', 'processing')")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


FAST_FOLDERS = ("unit", "fast")  # everything in them; tests/contract marks its memory half


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier (`pytest -m fast`): the folders that never touch Postgres or the stack."""
    tests = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(tests).parts
        if parts and parts[0] in FAST_FOLDERS:
            item.add_marker(pytest.mark.fast)
