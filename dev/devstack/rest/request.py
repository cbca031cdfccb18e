"""Per-request inputs other than the query string: the JWT, Prefer, Accept and the profile."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers

from devstack.keys import CLOCK_SKEW, InvalidToken, KeyRing
from devstack.rest.errors import ApiError, GatewayError
from devstack.rest.schema_cache import SCHEMA

API_ROLES = frozenset({"anon", "authenticated", "service_role"})

SET_CONFIG = """
select set_config('role', %(role)s, true),
       set_config('request.jwt.claims', %(claims)s, true),
       set_config('request.jwt.claim.sub', %(sub)s, true),
       set_config('request.jwt.claim.role', %(role)s, true),
       set_config('request.method', %(method)s, true),
       set_config('request.path', %(path)s, true),
       set_config('request.headers', %(headers)s, true),
       set_config('search_path', 'public, extensions', true),
       set_config('transaction_read_only', %(read_only)s, true)
"""

# The impersonated role's own settings (ALTER ROLE ... SET), as PostgREST applies them.
SET_ROLE_SETTINGS = """
select set_config(name, value, true) from unnest(%s::text[], %s::text[]) as s(name, value)
"""


@dataclass(frozen=True)
class Auth:
    role: str
    claims: dict[str, Any]

    @property
    def authed(self) -> bool:
        """PostgREST's "authenticated" flag: decides 401 vs 403 for 42501."""
        return self.role != "anon"

    def settings(self, method: str, path: str, headers: Headers, read_only: bool) -> dict[str, str]:
        sub = self.claims.get("sub")
        return {
            "role": self.role,
            "claims": json.dumps(self.claims),
            "sub": "" if sub is None else str(sub),
            "method": method,
            "path": path,
            "headers": json.dumps(dict(headers.items())),
            "read_only": "on" if read_only else "off",
        }


class TokenVerifier:
    """``KeyRing.verify`` with a small cache: a token seen before is not verified again,
    but its expiry (and not-before) is checked on every use, with PostgREST's 30 s of clock
    skew. The cache empties when the signing keys change (a removed key stops verifying)."""

    def __init__(self, keys: KeyRing, size: int = 4096) -> None:
        self._keys = keys
        self._size = size
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._seen_keys = keys.keys

    def verify(self, token: str) -> dict[str, Any]:
        if self._keys.keys is not self._seen_keys:
            self._cache.clear()
            self._seen_keys = self._keys.keys
        claims = self._cache.get(token)
        now = time.time()
        if claims is not None:
            exp, nbf = claims.get("exp"), claims.get("nbf")
            if isinstance(exp, int | float) and exp + CLOCK_SKEW <= now:
                del self._cache[token]
                raise InvalidToken("PGRST303", "JWT expired")
            if not (isinstance(nbf, int | float) and nbf - CLOCK_SKEW > now):
                self._cache.move_to_end(token)
                return claims
        claims = self._keys.verify(token, CLOCK_SKEW)
        self._cache[token] = claims
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return claims


def authenticate(headers: Headers, keys: TokenVerifier) -> Auth:
    """Bearer JWT from Authorization, else the apikey header; verified like PostgREST."""
    token: str | None = None
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    if token is None:
        token = headers.get("apikey") or None
    if token is None:
        raise GatewayError(401, "", "No API key found in request",
                           hint="No `apikey` request header or url param was found.")
    try:
        claims = keys.verify(token)
    except InvalidToken as exc:
        raise ApiError(
            401, exc.code, exc.message,
            headers={
                "WWW-Authenticate":
                    f'Bearer error="invalid_token", error_description="{exc.message}"'
            },
        ) from exc
    role = claims.get("role") or "anon"
    if not isinstance(role, str) or role not in API_ROLES:
        raise ApiError(403, "42501", f'permission denied to set role "{role}"')
    return Auth(role, claims)


@dataclass
class Prefer:
    ret: str | None = None  # representation | minimal | headers-only
    count: bool = False
    resolution: str | None = None  # merge-duplicates | ignore-duplicates
    missing_default: bool = False
    applied: list[str] = field(default_factory=list)


def parse_prefer(headers: Headers) -> Prefer:
    """Split every Prefer header on commas, trim, keep what we implement, ignore the rest."""
    prefer = Prefer()
    for header in headers.getlist("prefer"):
        for token in header.split(","):
            key, _, value = token.strip().partition("=")
            key, value = key.strip(), value.strip()
            if key == "return" and value in ("representation", "minimal", "headers-only"):
                prefer.ret = value
            elif key == "count" and value in ("exact", "planned", "estimated"):
                prefer.count = True
            elif key == "resolution" and value in ("merge-duplicates", "ignore-duplicates"):
                prefer.resolution = value
            elif key == "missing" and value in ("default", "null"):
                prefer.missing_default = value == "default"
            else:
                continue
            prefer.applied.append(f"{key}={value}")
    return prefer


@dataclass(frozen=True)
class Accept:
    single: bool = False
    strip_nulls: bool = False


_ARRAY_TYPES = frozenset(
    {"*/*", "application/*", "application/json", "application/vnd.pgrst.array+json",
     "application/vnd.pgrst.array"}
)
_OBJECT_TYPES = frozenset({"application/vnd.pgrst.object+json", "application/vnd.pgrst.object"})


def parse_accept(header: str | None) -> Accept:
    if not header or not header.strip():
        return Accept()
    offered: list[str] = []
    for media in header.split(","):
        kind, *params = (part.strip() for part in media.split(";"))
        kind = kind.lower()
        offered.append(kind)
        strip = any(p.replace(" ", "").lower() == "nulls=stripped" for p in params)
        if kind in _OBJECT_TYPES:
            return Accept(single=True, strip_nulls=strip)
        if kind in _ARRAY_TYPES:
            return Accept(single=False, strip_nulls=strip)
    raise ApiError(
        406, "PGRST107", "None of these media types are available: " + ", ".join(offered)
    )


def check_profile(method: str, headers: Headers) -> None:
    """Only schema public is exposed: any other Accept-/Content-Profile is PGRST106."""
    name = "accept-profile" if method in ("GET", "HEAD") else "content-profile"
    requested = headers.get(name)
    if requested is not None and requested.strip() != SCHEMA:
        raise ApiError(
            406, "PGRST106", f"Invalid schema: {requested.strip()}",
            hint=f"Only the following schemas are exposed: {SCHEMA}",
        )
