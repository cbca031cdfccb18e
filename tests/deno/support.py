"""Helpers of the Deno edge-function tests: user tokens, raw calls, supabase-js calls."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import httpx

from devstack.stack import StackState
from tests.stack.realtime_support import JS_DIR
from tests.support import Picture

SCHNELL = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"


def user_token(
    state: StackState,
    user_id: str,
    *,
    alg: str = "HS256",
    ttl: int = 3600,
    role: str = "authenticated",
) -> str:
    """An access token for ``user_id`` as the stack's Auth would issue it."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "role": role,
        "aud": "authenticated",
        "iss": f"{state.url}/auth/v1",
        "iat": now,
        "exp": now + ttl,
    }
    return str(state.keys.sign(claims, alg))


def new_user(picture: Picture, state: StackState) -> tuple[str, str]:
    user = picture.create_user()
    return user, user_token(state, user)


def call(
    state: StackState,
    name: str,
    token: str | None,
    body: Any = None,
    *,
    method: str = "POST",
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request to /functions/v1/<name> as a client sends it (apikey + Bearer token)."""
    sent = {"apikey": state.keys.anon_key, **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.request(
        method,
        f"{state.url}/functions/v1/{name}",
        json=body if content is None and body is not None else None,
        content=content,
        headers=sent,
        timeout=60,
    )


def invoke_js(state: StackState, calls: list[dict[str, Any]], *, sign_up: bool) -> dict[str, Any]:
    """Run tests/js/invoke_functions.mjs (supabase-js on Node) and return its document."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    env.update({"SUPABASE_URL": state.url, "SUPABASE_ANON_KEY": state.keys.anon_key})
    proc = subprocess.run(
        ["node", str(JS_DIR / "invoke_functions.mjs")],
        input=json.dumps({"sign_up": sign_up, "calls": calls}),
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict) and doc["ok"], doc
    return doc
