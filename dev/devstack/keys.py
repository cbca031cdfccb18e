"""Project keys of a local stack: the JWT secret, the anon and service_role API keys, and an
ES256 key pair published as JWKS (Supabase's asymmetric signing keys).

Everything is generated per stack and stored in the stack's state file; nothing here is a
real secret and no key is written into code.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

TEN_YEARS = 10 * 365 * 24 * 3600


class InvalidToken(Exception):
    """A bearer token that PostgREST would reject.

    ``code`` is PostgREST's: PGRST301 (cannot be decoded / bad signature) or PGRST303 (expired).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StackKeys:
    jwt_secret: str
    ec_private_pem: str
    kid: str

    @classmethod
    def generate(cls) -> StackKeys:
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(jwt_secret=secrets.token_urlsafe(48), ec_private_pem=pem, kid=str(uuid.uuid4()))

    # -- API keys (long-lived role JWTs, as `supabase start` prints) --------------------------
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

    # -- user tokens ------
    def sign(self, claims: dict[str, Any], alg: str = "HS256") -> str:
        if alg == "ES256":
            return jwt.encode(
                claims, self.ec_private_pem, algorithm="ES256", headers={"kid": self.kid}
            )
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def _public_key(self) -> ec.EllipticCurvePublicKey:
        private = serialization.load_pem_private_key(self.ec_private_pem.encode(), password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return private.public_key()

    def jwks(self) -> dict[str, Any]:
        numbers = self._public_key().public_numbers()

        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(numbers.x),
                    "y": b64(numbers.y),
                    "alg": "ES256",
                    "use": "sig",
                    "kid": self.kid,
                    "key_ops": ["verify"],
                }
            ]
        }

    def verify(self, token: str) -> dict[str, Any]:
        """Verify a bearer token like PostgREST: signature and expiry, no audience check."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("PGRST301", "Expected 3 parts in JWT; got fewer") from exc
        alg = header.get("alg")
        try:
            if alg == "HS256":
                claims = jwt.decode(
                    token, self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False}
                )
            elif alg == "ES256":
                claims = jwt.decode(
                    token, self._public_key(), algorithms=["ES256"], options={"verify_aud": False}
                )
            else:
                raise InvalidToken("PGRST301", "Wrong or unsupported encoding algorithm")
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("PGRST303", "JWT expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("PGRST301", "JWSError JWSInvalidSignature") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("PGRST301", "JWT claims are not an object")
        return claims
