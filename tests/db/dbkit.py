"""Helpers of the database contract tests: per-role connections and seed data.

``Database.as_role`` switches roles exactly as PostgREST does: it connects as
``authenticator`` and, inside one transaction, sets ``role`` and ``request.jwt.claims``
with ``set_config(..., true)`` (transaction-local), so everything runs with the API role's
privileges and RLS, and ``auth.uid()`` / ``auth.role()`` read the claims.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from devstack.pg import SUPERUSER, PgCluster
from worker import migrate

Conn = psycopg.Connection[DictRow]

FLUX = "black-forest-labs/flux-schnell"

# The RPCs SPEC section 3 reserves for the worker (service_role), with arguments that are
# valid for a call: a permission check must be what fails, not argument parsing.
WORKER_RPCS: dict[str, str] = {
    "enqueue_job": "select public.enqueue_job('generate-image',"
                   " '{\"model_id\": \"black-forest-labs/flux-schnell\"}'::jsonb)",
    "claim_next_job": "select * from public.claim_next_job(null, 'w', 300)",
    "claim_jobs": "select * from public.claim_jobs(5, null, 'w', 300)",
    "complete_job": "select * from public.complete_job(gen_random_uuid(), null, null)",
    "heartbeat_job": "select * from public.heartbeat_job(gen_random_uuid(), 'w', 300)",
    "release_job": "select * from public.release_job(gen_random_uuid(), 'w')",
    "requeue_stale_jobs": "select public.requeue_stale_jobs()",
    "register_worker": "select public.register_worker('w')",
    "fail_abandoned_generations": "select public.fail_abandoned_generations()",
    "cleanup_old_jobs": "select public.cleanup_old_jobs()",
    "next_scheduled_at": "select public.next_scheduled_at()",
    "job_retry_delay": "select public.job_retry_delay(1)",
    "create_generation": "select public.create_generation(gen_random_uuid(),"
                         " '{\"prompt\": \"x\"}'::jsonb, '{}'::jsonb)",
}

RPC_NAMES = (
    "enqueue_job", "claim_next_job", "claim_jobs", "complete_job", "heartbeat_job",
    "release_job", "requeue_stale_jobs", "cancel_generation",
)


# Released migrations that cannot run again once a later file has reshaped what they create
# (CREATE OR REPLACE VIEW cannot rename a view's columns). Re-running every file skips them;
# tests/db/test_migrations.py proves each skip is still needed.
RERUN_SKIPS: dict[str, str] = {
    "20261129000500_monitoring.sql": "20261201000600_monitoring_views.sql gives the monitoring"
    " views their original column names back, which this file's CREATE OR REPLACE VIEW"
    " cannot rename again",
}


def rerun_migrations(url: str) -> list[migrate.Migration]:
    """Every migration file again, regardless of history, but the RERUN_SKIPS."""
    with tempfile.TemporaryDirectory(prefix="picture-rerun-") as tmp:
        for path in sorted(migrate.default_migrations_dir().glob("*.sql")):
            if path.name not in RERUN_SKIPS:
                shutil.copy(path, Path(tmp) / path.name)
        return migrate.apply(url, Path(tmp), record=False)


def claims(role: str, sub: str | uuid.UUID | None = None) -> str:
    """The JWT claims PostgREST would put in ``request.jwt.claims`` for this caller."""
    body: dict[str, str] = {"role": role}
    if sub is not None:
        body["sub"] = str(sub)
    return json.dumps(body)


def switch_role(conn: Conn, role: str, sub: str | uuid.UUID | None = None) -> None:
    """PostgREST's per-request role switch; call inside an open transaction."""
    conn.execute(
        "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
        (role, claims(role, sub)),
    )


def named_call(function: str, **kwargs: Any) -> tuple[sql.Composed, dict[str, Any]]:
    """A call of ``public.<function>`` with named ``p_*`` arguments, and its parameters
    (dicts are sent as jsonb)."""
    args = [
        sql.SQL("{} => {}").format(sql.Identifier(f"p_{name}"), sql.Placeholder(name))
        for name in kwargs
    ]
    query = sql.SQL("select * from public.{}({})").format(
        sql.Identifier(function), sql.SQL(", ").join(args)
    )
    params = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
    return query, params


@dataclass(frozen=True)
class Database:
    """One database of the test cluster."""

    cluster: PgCluster
    name: str

    def dsn(self, user: str = SUPERUSER) -> str:
        return self.cluster.dsn(user=user, dbname=self.name)

    def url(self, user: str = "postgres") -> str:
        return self.cluster.url(user=user, dbname=self.name)

    def connect(self, user: str = SUPERUSER, *, autocommit: bool = True) -> Conn:
        return psycopg.connect(self.dsn(user), autocommit=autocommit, row_factory=dict_row)

    @contextmanager
    def admin(self) -> Iterator[Conn]:
        """A superuser connection, for arranging and asserting (never the code under test)."""
        with self.connect() as conn:
            yield conn

    @contextmanager
    def as_role(self, role: str, sub: str | uuid.UUID | None = None) -> Iterator[Conn]:
        """One PostgREST-style request: a transaction running as ``role`` with ``sub``."""
        with self.connect("authenticator", autocommit=False) as conn, conn.transaction():
            switch_role(conn, role, sub)
            yield conn

    def attempt(self, role: str, sub: str | uuid.UUID | None, query: str | sql.Composed,
                params: Sequence[Any] | dict[str, Any] | None = None
                ) -> tuple[str | None, list[DictRow]]:
        """One PostgREST-style request: (SQLSTATE or None, the rows it returned)."""
        try:
            with self.as_role(role, sub) as conn:
                cur = conn.execute(query.encode() if isinstance(query, str) else query, params)
                return None, cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            return exc.sqlstate, []

    def service(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None
                ) -> list[DictRow]:
        """Run one statement as service_role (a worker's RPC call) and return its rows."""
        with self.as_role("service_role") as conn:
            cur = conn.execute(query.encode(), params)
            return cur.fetchall() if cur.description else []

    def scalar(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """One value, read as the superuser."""
        with self.admin() as conn:
            row = conn.execute(query.encode(), params).fetchone()
            assert row is not None
            return next(iter(row.values()))

    def job(self, job_id: uuid.UUID | str) -> DictRow:
        with self.admin() as conn:
            row = conn.execute("select * from public.job_queue where id = %s", (job_id,)).fetchone()
            assert row is not None, f"job {job_id} not found"
            return row

    def generation(self, generation_id: uuid.UUID | str) -> DictRow:
        with self.admin() as conn:
            row = conn.execute(
                "select * from public.image_generations where id = %s", (generation_id,)
            ).fetchone()
            assert row is not None, f"generation {generation_id} not found"
            return row

    # -- arranging data -------------------------------------------------------------------
    def make_user(self) -> uuid.UUID:
        user_id = uuid.uuid4()
        with self.admin() as conn:
            conn.execute(
                "insert into auth.users (id, email) values (%s, %s)",
                (user_id, f"{user_id.hex[:12]}@example.test"),
            )
        return user_id

    def make_generation(self, user_id: uuid.UUID, status: str = "queued") -> uuid.UUID:
        with self.admin() as conn:
            row = conn.execute(
                "insert into public.image_generations (user_id, prompt, model, status)"
                " values (%s, 'a red fox', 'black-forest-labs/flux-schnell', %s) returning id",
                (user_id, status),
            ).fetchone()
        assert row is not None
        return uuid.UUID(str(row["id"]))

    def set_in_flight_limit(self, limit: int) -> None:
        """public.picture_settings.max_in_flight_per_user (0 = no limit)."""
        with self.admin() as conn:
            conn.execute("update public.picture_settings set max_in_flight_per_user = %s", (limit,))

    def rpc(self, function: str, **kwargs: Any) -> list[DictRow]:
        """``select * from public.<function>(p_<name> => value, ...)`` as service_role."""
        query, params = named_call(function, **kwargs)
        with self.as_role("service_role") as conn:
            return conn.execute(query, params).fetchall()

    def enqueue(self, job_type: str = "generate-image", payload: dict[str, Any] | None = None,
                **kwargs: Any) -> uuid.UUID:
        """enqueue_job as service_role; keyword arguments become named p_* arguments.

        A generate-image payload names a catalogue model (enqueue_job refuses one that does
        not): FLUX Schnell unless the payload says otherwise."""
        payload = dict(payload or {})
        if job_type == "generate-image":
            payload.setdefault("model_id", FLUX)
        rows = self.rpc("enqueue_job", job_type=job_type, payload=payload, **kwargs)
        return uuid.UUID(str(rows[0]["enqueue_job"]))

    def claim(self, worker: str = "w1", lease: int = 300,
              job_types: list[str] | None = None) -> DictRow | None:
        rows = self.service(
            "select * from public.claim_next_job(%s, %s, %s)", (job_types, worker, lease)
        )
        assert len(rows) <= 1
        return rows[0] if rows else None

    def backdate(self, table: str, row_id: uuid.UUID | str, **values: Any) -> None:
        """Set columns directly, bypassing the updated_at triggers (replica mode)."""
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(col), sql.Placeholder(col)) for col in values
        )
        query = sql.SQL("update public.{} set {} where id = {}").format(
            sql.Identifier(table), assignments, sql.Placeholder("row_id")
        )
        with self.admin() as conn, conn.transaction():
            conn.execute("set local session_replication_role = replica")
            conn.execute(query, {**values, "row_id": row_id})

    def expire_lease(self, job_id: uuid.UUID | str) -> None:
        with self.admin() as conn:
            conn.execute(
                "update public.job_queue set locked_until = now() - interval '1 second'"
                " where id = %s",
                (job_id,),
            )
