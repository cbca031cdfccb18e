"""Bearer-token checks, the way Supabase verifies them (replicate_supabase.md section 6).

- ``sb_…`` values are API keys, never user tokens.
- The algorithm is allow-listed from the unverified header: HS256 is checked with the
  legacy JWT secret (its raw UTF-8 bytes, as GoTrue uses it); ES256 / RS256 with the public
  keys of the project's JWKS (``{SUPABASE_URL}/auth/v1/.well-known/jwks.json``), fetched
  with an async client (the local stack serves the JWKS from this very process, so a
  blocking fetch on the event loop would deadlock), cached for five minutes and fetched
  again for a ``kid`` it does not know (rotation).
- The project's API keys are accepted in both forms: the legacy service_role JWT or the
  ``sb_secret_`` key (``service``), the anon JWT or the ``sb_publishable_`` key (``project``).
- ``exp`` is required, with PostgREST's 30 s of leeway on ``exp``/``nbf``/``iat`` (a host a
  second behind Auth must not refuse fresh tokens); user endpoints also require
  ``aud`` = ``authenticated``, ``role`` = ``authenticated`` and a uuid ``sub``;
  ``FUNCTIONS_JWT_ISSUER``, when set, is checked as ``iss``.

Three levels: ``user`` (start-generation, generate-image), ``project`` (any valid project
JWT, the anon key included: process-jobs) and ``service`` (the service_role key only:
process-generation).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from starlette.requests import Request

from functions_compat.config import FunctionsConfig
from functions_compat.http import HttpError

log = logging.getLogger("functions_compat.auth")

ASYMMETRIC = ("ES256", "RS256")
JWKS_LIFESPAN = 300.0  # Supabase caches 10 min at the edge; stay below that
JWKS_MIN_REFRESH = 30.0  # a kid a fetch did not find is not fetched for again this long
JWKS_MIN_GAP = 1.0  # seconds between two fetches for unknown kids
JWKS_MAX_UNKNOWN = 1024
LEEWAY = 30  # seconds of clock skew allowed on exp/nbf/iat, as PostgREST allows
JWKS_TIMEOUT = 5.0
MAX_TOKEN_CHARS = 16_384


class AuthError(HttpError):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(status, message)


@dataclass(frozen=True)
class Caller:
    role: str
    user_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    token: str = field(default="", repr=False)  # the verified bearer (user calls pass it on)


class JwksCache:
    """The project's asymmetric public keys, by ``kid``, refreshed every few minutes.

    A token whose ``kid`` is not in the cache makes it fetch the JWKS again (a key was
    rotated in since), at most once per ``min_gap`` seconds (a second such token waits for
    the gap rather than being refused); a ``kid`` still unknown after that fetch is
    remembered as unknown for ``min_refresh`` seconds, so a stream of forged ``kid``s cannot
    make it fetch on every request."""

    def __init__(
        self,
        url: str,
        *,
        lifespan: float = JWKS_LIFESPAN,
        min_refresh: float = JWKS_MIN_REFRESH,
        min_gap: float = JWKS_MIN_GAP,
        timeout: float = JWKS_TIMEOUT,
    ) -> None:
        self.url = url
        self.lifespan = lifespan
        self.min_refresh = min_refresh
        self.min_gap = min_gap
        self.timeout = timeout
        self._keys: list[jwt.PyJWK] = []
        self._fetched_at: float | None = None
        self._unknown: dict[str, float] = {}  # kid -> when a fetch did not find it
        self.fetches = 0

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        now = time.monotonic()
        if self._fetched_at is None or now - self._fetched_at > self.lifespan:
            await self._refresh()
        key = self._find(kid, alg)
        if key is None and kid is not None and self._worth_refetching(kid):
            await self._refresh_for(kid)
            key = self._find(kid, alg)
            if key is None:
                if len(self._unknown) > JWKS_MAX_UNKNOWN:
                    self._unknown.clear()
                self._unknown[kid] = time.monotonic()
        if key is None:
            raise AuthError("Invalid JWT: no matching signing key")
        return key

    def _worth_refetching(self, kid: str) -> bool:
        seen = self._unknown.get(kid)
        return seen is None or time.monotonic() - seen > self.min_refresh

    async def _refresh_for(self, kid: str) -> None:
        """Fetch again for a new ``kid``, no sooner than ``min_gap`` after the last fetch."""
        fetched = self._fetched_at
        if fetched is not None:
            wait = self.min_gap - (time.monotonic() - fetched)
            if wait > 0:
                await asyncio.sleep(wait)
            if self._fetched_at != fetched and self._find(kid, None) is not None:
                return  # another request fetched meanwhile and found it
        await self._refresh()

    def _find(self, kid: str | None, alg: str | None) -> jwt.PyJWK | None:
        matches = [
            k
            for k in self._keys
            if (alg is None or k.algorithm_name == alg) and (kid is None or k.key_id == kid)
        ]
        return matches[0] if len(matches) == 1 or (kid is not None and matches) else None

    async def _refresh(self) -> None:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                response = await client.get(self.url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch the JWKS from %s: %s", self.url, exc)
            raise HttpError(500, "Cannot verify the token: signing keys unavailable") from None
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        keys: list[jwt.PyJWK] = []
        for entry in raw_keys if isinstance(raw_keys, list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type we do not use (e.g. a symmetric "oct" entry)
            if key.algorithm_name in ASYMMETRIC:
                keys.append(key)
        self._keys = keys
        self._fetched_at = time.monotonic()


class TokenVerifier:
    def __init__(self, config: FunctionsConfig, jwks: JwksCache | None = None) -> None:
        self.config = config
        self.jwks = jwks or JwksCache(config.jwks_url)

    # -- the three levels ------
    async def user(self, request: Request) -> Caller:
        token = _bearer(request, fallback_apikey=False)
        if token.startswith("sb_"):
            raise AuthError("A signed-in user's access token is required, not an API key")
        claims = await self.decode(token, audience="authenticated")
        if claims.get("role") != "authenticated":
            raise AuthError("A signed-in user's access token is required")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _is_uuid(sub):
            raise AuthError("Invalid JWT: no user id (sub)")
        return Caller("authenticated", sub.lower(), claims, token)

    async def project(self, request: Request) -> Caller:
        token = _bearer(request, fallback_apikey=True)
        if self._is_service_key(token):
            return Caller("service_role")
        if token.startswith("sb_"):
            if _one_of(token, self.config.public_keys):  # sb_publishable_: acts as anon
                return Caller("anon")
            raise AuthError("Invalid API key")
        claims = await self.decode(token, audience=None)
        role = claims.get("role")
        if role not in ("anon", "authenticated", "service_role"):
            raise AuthError("Invalid JWT: unknown role")
        sub = claims.get("sub")
        return Caller(str(role), sub if isinstance(sub, str) else None, claims)

    async def service(self, request: Request) -> Caller:
        token = _bearer(request, fallback_apikey=True)
        if self._is_service_key(token):
            return Caller("service_role")
        if token.startswith("sb_"):
            raise AuthError("This function requires the service_role key")
        claims = await self.decode(token, audience=None)
        if claims.get("role") != "service_role":
            raise AuthError("This function requires the service_role key")
        return Caller("service_role", None, claims)

    # -- verification ------
    def _is_service_key(self, token: str) -> bool:
        """The legacy service_role JWT or the sb_secret_ key, whichever the caller sends."""
        return _one_of(token, self.config.service_keys)

    async def decode(self, token: str, *, audience: str | None) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("Invalid JWT") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256":
            if not self.config.jwt_secret:
                raise AuthError("Invalid JWT: HS256 tokens are not accepted by this project")
            key = self.config.jwt_secret
        elif alg in ASYMMETRIC:
            kid = header.get("kid")
            key = (await self.jwks.key_for(kid if isinstance(kid, str) else None, alg)).key
        else:
            raise AuthError("Invalid JWT: unsupported algorithm")
        options: dict[str, Any] = {"require": ["exp"], "verify_aud": audience is not None}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(alg)],
                audience=audience,
                issuer=self.config.jwt_issuer,
                options=options,  # type: ignore[arg-type]
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("JWT expired") from None
        except jwt.PyJWTError:
            raise AuthError("Invalid JWT") from None
        if not isinstance(claims, dict):
            raise AuthError("Invalid JWT")
        return claims


def _bearer(request: Request, *, fallback_apikey: bool) -> str:
    header = request.headers.get("authorization")
    if header is None and fallback_apikey:
        header = request.headers.get("apikey")
        if header is not None:
            header = f"Bearer {header}"
    if header is None or not header.strip():
        raise AuthError("Missing authorization header")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    malformed = not token or len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token)
    if scheme.lower() != "bearer" or malformed:
        raise AuthError("Invalid authorization header: expected 'Bearer <token>'")
    return token


def _one_of(token: str, keys: tuple[str, ...]) -> bool:
    found = False
    for key in keys:  # compare with each, in constant time
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36
