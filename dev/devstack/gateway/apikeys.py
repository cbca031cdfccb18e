"""The new API keys at the gateway, as hosted Supabase resolves them.

``sb_publishable_...`` and ``sb_secret_...`` are not JWTs, so the services behind the
gateway never see them: when the ``apikey`` header carries one, the gateway checks it and
passes on, in its place, a short-lived JWT of the role it stands for (anon / service_role),
signed with the project's current signing key. ``Authorization: Bearer <the same key>``
(supabase-py and supabase-js send it as a fallback) is replaced the same way; any other
``Authorization`` (a user's access token) goes through unchanged and decides the role.

Refused here, with the gateway's ``{"message", "hint"}`` body and 401: an unknown ``sb_``
key, and a secret key sent from a browser (a ``Mozilla/`` user agent).

Routes under ``/functions/v1`` get the headers as sent: Edge Functions see the keys
themselves.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from devstack.keys import KeyRing

PASS_THROUGH = ("/functions/v1/",)


def _refusal(message: str, hint: str | None = None) -> Response:
    body = {"message": message} if hint is None else {"message": message, "hint": hint}
    return Response(json.dumps(body), 401, media_type="application/json; charset=utf-8")


def resolve(scope: Scope, keyring: KeyRing) -> Scope | Response:
    """The scope to pass on (headers rewritten when an sb_ key was sent), or the refusal."""
    if scope["path"].startswith(PASS_THROUGH):
        return scope
    headers = Headers(scope=scope)
    apikey = headers.get("apikey", "")
    if not apikey.startswith("sb_"):
        return scope
    role = keyring.api_key_role(apikey)
    if role is None:
        return _refusal("Invalid API key", "Double check the provided API key.")
    if role == "service_role" and headers.get("user-agent", "").startswith("Mozilla/"):
        return _refusal("Forbidden use of secret API key in browser",
                        "Secret API keys can only be used in a protected environment and "
                        "should never be used in a browser.")
    token = keyring.role_token(role).encode()
    authorization = headers.get("authorization")
    same_key = authorization is not None and authorization.strip() == f"Bearer {apikey}"
    rewritten = [
        (name, value) for name, value in scope["headers"]
        if name != b"apikey" and not (name == b"authorization" and same_key)
    ]
    rewritten.append((b"apikey", token))
    if authorization is None or same_key:
        rewritten.append((b"authorization", b"Bearer " + token))
    return {**scope, "headers": rewritten}
