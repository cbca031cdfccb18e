"""What a hosted Supabase database does around our migrations, reproduced by the stack's
bootstrap (dev/devstack/bootstrap.sql) and checked on PostgreSQL 15 and 17:

- DDL sends ``NOTIFY pgrst, 'reload schema'`` from the ``pgrst_ddl_watch`` /
  ``pgrst_drop_watch`` event triggers, also when the non-superuser ``postgres`` role runs
  it (as ``supabase db push`` does), and not for temporary objects;
- the API roles carry hosted's statement timeouts (anon 3 s, authenticated 8 s,
  authenticator 8 s; service_role none, so it inherits the authenticator's).
"""

from __future__ import annotations

import psycopg

from tests.db.dbkit import Database


def _notifications(db: Database, ddl: str) -> list[tuple[str, str]]:
    """Run ``ddl`` as postgres while a superuser session listens on channel pgrst."""
    with psycopg.connect(db.dsn(), autocommit=True) as listener:
        listener.execute("listen pgrst")
        with db.connect("postgres") as owner:
            owner.execute(ddl.encode())
        return [(n.channel, n.payload) for n in listener.notifies(timeout=0.5, stop_after=10)]


def test_ddl_by_the_owner_reloads_the_schema_cache(db: Database) -> None:
    created = _notifications(
        db, "create function public.pw_probe() returns int language sql as 'select 1'"
    )
    assert ("pgrst", "reload schema") in created
    altered = _notifications(db, "comment on function public.pw_probe() is 'probe'")
    assert ("pgrst", "reload schema") in altered
    dropped = _notifications(db, "drop function public.pw_probe()")
    assert ("pgrst", "reload schema") in dropped


def test_temporary_objects_and_plain_writes_do_not_notify(db: Database) -> None:
    assert _notifications(db, "create temporary table pw_scratch (id int)") == []
    assert _notifications(db, "select count(*) from public.job_queue") == []


def test_api_roles_have_hosted_statement_timeouts(db: Database) -> None:
    with db.admin() as conn:
        rows = conn.execute(
            "select r.rolname, s.setconfig from pg_db_role_setting s"
            " join pg_roles r on r.oid = s.setrole"
            " where r.rolname in ('anon', 'authenticated', 'authenticator', 'service_role')"
        ).fetchall()
    settings = {str(r["rolname"]): list(r["setconfig"]) for r in rows}
    assert settings == {
        "anon": ["statement_timeout=3s"],
        "authenticated": ["statement_timeout=8s"],
        "authenticator": ["statement_timeout=8s"],
    }
    with db.connect("authenticator") as conn:  # the session PostgREST's pool opens
        row = conn.execute("show statement_timeout").fetchone()
    assert row is not None and row["statement_timeout"] == "8s"
