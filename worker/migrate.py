"""Apply ``supabase/migrations`` to a database, the way ``supabase db push`` does.

Each file runs in its own transaction, in file-name order, as the connecting role (on
Supabase: ``postgres``, not a superuser). What ran is recorded in
``supabase_migrations.schema_migrations`` (the Supabase CLI's own history table: version,
name, statements), so the CLI and this command agree on what is applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>.+)\.sql$")


class MigrationError(Exception):
    """A migration file is misnamed or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def default_migrations_dir() -> Path:
    """``supabase/migrations`` beside the package (source checkout or /app in the image)."""
    here = Path(__file__).resolve().parent
    for base in (here.parent, Path.cwd(), Path("/app")):
        candidate = base / "supabase" / "migrations"
        if candidate.is_dir():
            return candidate
    raise MigrationError("supabase/migrations not found; pass --dir")


def discover(directory: Path) -> list[Migration]:
    if not directory.is_dir():
        raise MigrationError(f"{directory}: no such folder of migrations")
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named YYYYMMDDHHMMSS_name.sql")
        found.append(Migration(match["version"], match["name"], path))
    return found


_HISTORY = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
"""


def applied_versions(conn: psycopg.Connection) -> set[str]:
    conn.execute(_HISTORY)
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {str(r[0]) for r in rows}


def apply(
    conninfo: str,
    directory: Path | None = None,
    *,
    record: bool = True,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[Migration]:
    """Apply pending migrations; returns those applied (or that would be, with dry_run).

    With ``record=False`` every file runs regardless of history (tests use this to prove
    the files are idempotent).
    """
    migrations = discover(directory or default_migrations_dir())
    done: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: _log_notice(log, diag.message_primary))
        seen = applied_versions(conn) if record else set()
        for migration in migrations:
            if migration.version in seen:
                continue
            done.append(migration)
            if dry_run:
                log(f"would apply {migration.path.name}")
                continue
            log(f"applying {migration.path.name}")
            try:
                with conn.transaction():
                    conn.execute(migration.sql.encode("utf-8"))
                    if record:
                        conn.execute(
                            "insert into supabase_migrations.schema_migrations"
                            " (version, name, statements) values (%s, %s, %s)",
                            (migration.version, migration.name, [migration.sql]),
                        )
            except psycopg.Error as exc:
                raise MigrationError(f"{migration.path.name}: {exc}".strip()) from exc
    return done


def _log_notice(log: Callable[[str], None], message: str | None) -> None:
    # "already exists, skipping" is how an idempotent migration says it had nothing to do.
    if message and not message.endswith("skipping"):
        log(f"  notice: {message}")
