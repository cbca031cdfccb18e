"""The local stack's switches: hosted Supabase's behaviour by default, each one changeable.

Read once from the environment of ``python -m devstack serve`` (``DEVSTACK_*``; ``Stack``
passes its ``server_env`` there) and changed while the stack runs with
``POST /_stack/settings`` (a JSON object of the fields to change; ``GET`` shows them all).
Every service reads the current value on each request, so a change applies at once.

    url_limit                  DEVSTACK_URL_LIMIT                 8192 bytes of request line
                               before the gateway answers Kong's 414 (0: no limit)
    max_rows                   DEVSTACK_MAX_ROWS                  1000 rows at most per read,
                               PostgREST's db-max-rows as on hosted (0: no cap)
    schema_reload_delay        DEVSTACK_SCHEMA_RELOAD_DELAY       0.25 s between PostgREST's
                               NOTIFY pgrst and the new schema cache being in use
    realtime_subscribe_delay   DEVSTACK_REALTIME_SUBSCRIBE_DELAY  0.5 s between the phx_join
                               reply and the postgres_changes subscription existing
    jwt_alg                    DEVSTACK_JWT_ALG                   ES256: how Auth signs user
                               access tokens (HS256: with the legacy JWT secret)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ENV_PREFIX = "DEVSTACK_"
JWT_ALGS = ("ES256", "HS256")
MAX_DELAY = 60.0


class SettingsError(ValueError):
    """A setting that does not exist or a value it cannot take."""


@dataclass(frozen=True)
class StackSettings:
    url_limit: int = 8192
    max_rows: int = 1000
    schema_reload_delay: float = 0.25
    realtime_subscribe_delay: float = 0.5
    jwt_alg: str = "ES256"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackSettings:
        source = os.environ if env is None else env
        changes = {
            f.name: source[ENV_PREFIX + f.name.upper()]
            for f in fields(cls)
            if ENV_PREFIX + f.name.upper() in source
        }
        return cls().changed(changes)

    def changed(self, changes: Mapping[str, Any]) -> StackSettings:
        """A copy with ``changes`` applied, each value checked (strings are parsed)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}; known: "
                                f"{', '.join(sorted(known))}")
        return replace(self, **{name: _check(name, value) for name, value in changes.items()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, value: Any) -> Any:
    if name == "jwt_alg":
        alg = str(value).upper()
        if alg not in JWT_ALGS:
            raise SettingsError(f"jwt_alg must be one of {', '.join(JWT_ALGS)}, not {value!r}")
        return alg
    if name in ("url_limit", "max_rows"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} must be a whole number, not {value!r}") from None
        if number < 0 or isinstance(value, bool):
            raise SettingsError(f"{name} must be 0 (off) or more, not {value!r}")
        return number
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0.0 <= seconds <= MAX_DELAY or isinstance(value, bool):
        raise SettingsError(f"{name} must be 0..{MAX_DELAY:.0f} seconds, not {value!r}")
    return seconds
