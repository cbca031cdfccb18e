"""The migration files: idempotent, recorded once each, free of secrets."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.db.dbkit import RERUN_SKIPS, Database, rerun_migrations
from worker import migrate

MIGRATIONS = migrate.default_migrations_dir()
FILES = sorted(MIGRATIONS.glob("*.sql"))

SECRET_PATTERNS = {
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    "Supabase secret key": re.compile(r"sb_secret_[A-Za-z0-9_-]+"),
    "service_role key material": re.compile(
        r"service_role[_ -]?key\s*[:=]\s*\S+"
        r"|['\"]?service_role['\"]?\s*[:=]\s*['\"][A-Za-z0-9._-]{20,}",
        re.IGNORECASE,
    ),
    "bearer token": re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    "Replicate token": re.compile(r"\br8_[A-Za-z0-9]{10,}"),
}


def test_migration_files_are_named_for_the_supabase_cli() -> None:
    assert FILES, "no migrations found"
    assert [m.path for m in migrate.discover(MIGRATIONS)] == FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_secret_in_a_migration(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for kind, pattern in SECRET_PATTERNS.items():
        match = pattern.search(text)
        assert match is None, f"{path.name}: looks like a {kind}: {match.group(0)[:12]}..."


def test_the_secret_scan_would_catch_the_legacy_schedule() -> None:
    token = ".".join(("eyJhbGciOiJIUzI1NiJ9", "eyJyb2xlIjoic2VydmljZV9yb2xlIn0", "c2lnbmF0dXJl"))
    legacy = (
        "select net.http_post(url := 'https://x.supabase.co/functions/v1/process-jobs',"
        f" headers := '{{\"Authorization\": \"Bearer {token}\"}}')"
    )
    found = {kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(legacy)}
    assert {"JWT", "bearer token"} <= found
    assert SECRET_PATTERNS["Replicate token"].search("REPLICATE_API_TOKEN=r8_abcdefghijklmnop")
    assert SECRET_PATTERNS["Supabase secret key"].search("sb_secret_abcdef")


def test_migrations_apply_twice(db_factory: Callable[..., Database]) -> None:
    db = db_factory(migrated=False)
    first = migrate.apply(db.url("postgres"), record=False)
    second = rerun_migrations(db.url("postgres"))
    third = rerun_migrations(db.url("postgres"))
    assert [m.path for m in first] == FILES
    rerun = [p.name for p in FILES if p.name not in RERUN_SKIPS]
    assert [m.path.name for m in second] == rerun == [m.path.name for m in third]
    assert db.scalar("select count(*) from public.models") == 14
    assert db.scalar("select count(*) from pg_policies where policyname like 'picture: %'") == 13
    assert db.scalar("select count(*) from public.picture_settings") == 1


@pytest.mark.parametrize("name", sorted(RERUN_SKIPS))
def test_each_rerun_skip_is_needed(db: Database, name: str) -> None:
    """A skipped file really fails on a migrated database (else it must run again)."""
    (path,) = [p for p in FILES if p.name == name]
    with db.connect("postgres") as conn, pytest.raises(psycopg.Error):
        conn.execute(path.read_text(encoding="utf-8").encode())


def test_history_lists_every_file_once(db: Database) -> None:
    with db.admin() as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        ).fetchall()
    expected = [(m.version, m.name) for m in migrate.discover(MIGRATIONS)]
    assert [(r["version"], r["name"]) for r in rows] == expected
    assert all(r["statements"] and r["statements"][0].strip() for r in rows)
    assert migrate.apply(db.url("postgres")) == []  # everything recorded: nothing to do


def test_migrations_apply_as_a_non_superuser(db: Database) -> None:
    assert db.scalar("select rolsuper from pg_roles where rolname = 'postgres'") is False
    owners = db.scalar(
        "select array_agg(distinct pg_get_userbyid(c.relowner)) from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'v')"
    )
    assert owners == ["postgres"]


def test_generated_images_bucket(db: Database) -> None:
    with db.admin() as conn:
        bucket = conn.execute(
            "select public, file_size_limit, allowed_mime_types from storage.buckets"
            " where id = 'generated-images'"
        ).fetchone()
    assert bucket is not None
    assert bucket["public"] is True
    assert 0 < bucket["file_size_limit"] <= 50 * 1024 * 1024
    assert set(bucket["allowed_mime_types"]) == {
        "image/webp", "image/png", "image/jpeg", "image/svg+xml",
    }
