"""What every part of the local stack shares: keys, database pools, paths, URLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp

from devstack.keys import KeyRing, StackKeys
from devstack.settings import StackSettings


@dataclass
class StackContext:
    keys: StackKeys
    pg_port: int
    public_url: str  # http://127.0.0.1:<port>, what clients use as SUPABASE_URL
    storage_root: Path  # object bytes live here, metadata in storage.objects
    dbname: str = "postgres"
    functions_app: ASGIApp | None = None
    settings: StackSettings = field(default_factory=StackSettings.from_env)
    # Connection pools, opened by the app's lifespan:
    #   api   - as `authenticator`, like PostgREST: each request does SET LOCAL ROLE
    #   admin - as the superuser, for what Supabase's own services do (GoTrue, Storage)
    api_pool: AsyncConnectionPool | None = None
    admin_pool: AsyncConnectionPool | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # What every service verifies and signs with (rotatable); starts from ``keys``.
    keyring: KeyRing = field(init=False)

    def __post_init__(self) -> None:
        self.keyring = KeyRing(self.keys)

    def dsn(self, user: str) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user={user} dbname={self.dbname}"

    @property
    def api(self) -> AsyncConnectionPool:
        assert self.api_pool is not None, "stack not started"
        return self.api_pool

    @property
    def admin(self) -> AsyncConnectionPool:
        assert self.admin_pool is not None, "stack not started"
        return self.admin_pool
