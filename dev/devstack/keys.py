"""Project keys of a local stack, as a hosted project has them:

- the legacy JWT secret (HS256) and the legacy ``anon`` / ``service_role`` API keys, which
  are long-lived JWTs signed with it;
- the new API keys ``sb_publishable_...`` (acts as anon) and ``sb_secret_...`` (acts as
  service_role), which are not JWTs: the gateway resolves them (devstack.gateway.apikeys);
- asymmetric signing keys (ES256, each with a ``kid``) published as the JWKS: the current
  one signs user access tokens; after a rotation the earlier ones stay published, and keep
  verifying, until removed.

Every service verifies a bearer token like PostgREST: HS256 with the legacy secret or an
asymmetric signature from the JWKS; the REST API allows PostgREST's 30 s of clock skew on
``exp``/``nbf``/``iat``, the other services none. ``StackKeys`` is the stored, immutable
state; ``KeyRing`` is the live, rotatable holder the running stack shares.

Everything is generated per stack and stored in the stack's state file (the ``sb_`` keys are
derived from the JWT secret); nothing here is a real secret and no key is written into code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

TEN_YEARS = 10 * 365 * 24 * 3600
CLOCK_SKEW = 30  # seconds, as PostgREST allows
PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"


class InvalidToken(Exception):
    """A bearer token that PostgREST would reject.

    ``code`` is PostgREST's: PGRST301 (cannot be decoded / bad signature) or PGRST303 (expired).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _new_ec_pem() -> str:
    private = ec.generate_private_key(ec.SECP256R1())
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_key(pem: str) -> ec.EllipticCurvePublicKey:
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return private.public_key()


def _jwk(kid: str, pem: str) -> dict[str, Any]:
    numbers = _public_key(pem).public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(numbers.x),
        "y": b64(numbers.y),
        "alg": "ES256",
        "use": "sig",
        "kid": kid,
        "key_ops": ["verify"],
    }


@dataclass(frozen=True)
class StackKeys:
    jwt_secret: str
    ec_private_pem: str  # the current signing key
    kid: str
    previous: tuple[tuple[str, str], ...] = ()  # (kid, pem) of earlier keys, still published

    @classmethod
    def generate(cls) -> StackKeys:
        return cls(jwt_secret=secrets.token_urlsafe(48), ec_private_pem=_new_ec_pem(),
                   kid=str(uuid.uuid4()))

    # -- legacy API keys (long-lived role JWTs, as `supabase start` prints) -------------------
    def api_key(self, role: str) -> str:
        now = int(time.time())
        claims = {"iss": "supabase-demo", "role": role, "iat": now, "exp": now + TEN_YEARS}
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    @property
    def anon_key(self) -> str:
        return self.api_key("anon")

    @property
    def service_role_key(self) -> str:
        return self.api_key("service_role")

    # -- new API keys: opaque, derived from the secret (stable for the stack's life) ----------
    def _opaque(self, purpose: bytes) -> str:
        digest = hmac.new(self.jwt_secret.encode(), purpose, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:32]

    @property
    def publishable_key(self) -> str:
        return PUBLISHABLE_PREFIX + self._opaque(b"sb_publishable")

    @property
    def secret_key(self) -> str:
        return SECRET_PREFIX + self._opaque(b"sb_secret")

    def api_key_role(self, value: str) -> str | None:
        """anon / service_role for this stack's sb_ keys, None for anything else."""
        if hmac.compare_digest(value.encode(), self.publishable_key.encode()):
            return "anon"
        if hmac.compare_digest(value.encode(), self.secret_key.encode()):
            return "service_role"
        return None

    # -- signing keys --------------------------------------------------------------------------
    @property
    def signing_keys(self) -> tuple[tuple[str, str], ...]:
        """(kid, pem) of every published key, the current one first."""
        return ((self.kid, self.ec_private_pem), *self.previous)

    def rotated(self) -> StackKeys:
        """A new current signing key; the old one stays published for verification."""
        return replace(self, ec_private_pem=_new_ec_pem(), kid=str(uuid.uuid4()),
                       previous=((self.kid, self.ec_private_pem), *self.previous))

    def without(self, kid: str) -> StackKeys:
        """The keys without the earlier key ``kid`` (tokens it signed stop verifying)."""
        if kid == self.kid:
            raise ValueError("the current signing key cannot be removed: rotate first")
        if kid not in {k for k, _ in self.previous}:
            raise KeyError(kid)
        return replace(self, previous=tuple(p for p in self.previous if p[0] != kid))

    # -- tokens --------------------------------------------------------------------------------
    def sign(self, claims: dict[str, Any], alg: str = "HS256") -> str:
        if alg == "ES256":
            return jwt.encode(
                claims, self.ec_private_pem, algorithm="ES256", headers={"kid": self.kid}
            )
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_jwk(kid, pem) for kid, pem in self.signing_keys]}

    def _public_key(self) -> ec.EllipticCurvePublicKey:
        """The current signing key's public half."""
        return _public_key(self.ec_private_pem)

    def _verification_key(self, kid: Any) -> list[ec.EllipticCurvePublicKey]:
        if kid is None:  # no kid: any published key may have signed it
            return [_public_key(pem) for _, pem in self.signing_keys]
        return [_public_key(pem) for k, pem in self.signing_keys if k == kid]

    def verify(self, token: str, leeway: int = 0) -> dict[str, Any]:
        """Verify a bearer token: signature and expiry (``leeway`` seconds of clock skew on
        exp/nbf/iat: PostgREST allows CLOCK_SKEW), no audience check."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("PGRST301", "Expected 3 parts in JWT; got fewer") from exc
        alg = header.get("alg")
        options = {"verify_aud": False}
        try:
            if alg == "HS256":
                claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"],
                                    options=options, leeway=leeway)
            elif alg == "ES256":
                claims = self._verify_es256(token, header.get("kid"), options, leeway)
            else:
                raise InvalidToken("PGRST301", "Wrong or unsupported encoding algorithm")
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("PGRST303", "JWT expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("PGRST301", "JWSError JWSInvalidSignature") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("PGRST301", "JWT claims are not an object")
        return claims

    def _verify_es256(
        self, token: str, kid: Any, options: dict[str, Any], leeway: int
    ) -> Any:
        candidates = self._verification_key(kid)
        if not candidates:
            raise InvalidToken("PGRST301", "No suitable key or wrong key type")
        last: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                return jwt.decode(token, key, algorithms=["ES256"], options=options,
                                  leeway=leeway)
            except jwt.InvalidSignatureError as exc:
                last = exc
        assert last is not None
        raise last


class KeyRing:
    """The running stack's keys: what every service verifies and signs with, rotatable.

    ``on_change`` is told the new ``StackKeys`` after a rotation or a removal (the stack
    writes them to its state file, so a restart keeps them)."""

    def __init__(
        self, keys: StackKeys, on_change: Callable[[StackKeys], None] | None = None
    ) -> None:
        self._keys = keys
        self._on_change = on_change
        self._minted: dict[str, tuple[str, float]] = {}

    @property
    def keys(self) -> StackKeys:
        return self._keys

    def _replace(self, keys: StackKeys) -> StackKeys:
        self._keys = keys
        self._minted.clear()
        if self._on_change is not None:
            self._on_change(keys)
        return keys

    def rotate(self) -> StackKeys:
        return self._replace(self._keys.rotated())

    def remove(self, kid: str) -> StackKeys:
        return self._replace(self._keys.without(kid))

    def verify(self, token: str, leeway: int = 0) -> dict[str, Any]:
        return self._keys.verify(token, leeway)

    def sign(self, claims: dict[str, Any], alg: str = "HS256") -> str:
        return self._keys.sign(claims, alg)

    def jwks(self) -> dict[str, Any]:
        return self._keys.jwks()

    def api_key_role(self, value: str) -> str | None:
        return self._keys.api_key_role(value)

    def role_token(self, role: str, ttl: int = 120) -> str:
        """A short-lived JWT for ``role``, signed with the current key: what the gateway
        passes on in place of an sb_ API key (reused for half its life)."""
        now = time.time()
        cached = self._minted.get(role)
        if cached is not None and cached[1] - now > ttl / 2:
            return cached[0]
        exp = int(now) + ttl
        token = self._keys.sign({"iss": "supabase", "role": role, "iat": int(now), "exp": exp},
                                "ES256")
        self._minted[role] = (token, exp)
        return token
