"""The new API keys (sb_publishable_ / sb_secret_) beside the legacy JWT keys, as hosted
Supabase's gateway resolves them, through supabase-py and supabase-js exactly as they send
them (``apikey`` plus, as a fallback, ``Authorization: Bearer <the same key>``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from devstack.stack import Stack, StackState

JS_DIR = Path(__file__).resolve().parents[1] / "js"
ROOT = JS_DIR.parents[1]
PASSWORD = "correct-horse-42"


def _client(state: StackState, key: str) -> Client:
    return create_client(state.url, key, ClientOptions(auto_refresh_token=False,
                                                        persist_session=False))


def test_stack_env_prints_both_kinds_of_keys(stack: Stack) -> None:
    cli = ROOT / ".venv" / "bin" / "picture-worker"
    out = subprocess.run([str(cli), "stack", "env", "--root", str(stack.root)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    exported = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert exported["SUPABASE_PUBLISHABLE_KEY"].startswith("sb_publishable_")
    assert exported["SUPABASE_SECRET_KEY"].startswith("sb_secret_")
    assert exported["SUPABASE_ANON_KEY"].count(".") == 2  # the legacy keys stay: JWTs
    assert exported["SUPABASE_SERVICE_ROLE_KEY"].count(".") == 2


def test_the_secret_key_acts_as_service_role(stack_state: StackState) -> None:
    secret = _client(stack_state, stack_state.keys.secret_key)
    assert secret.rpc("next_scheduled_at").execute() is not None  # service_role-only RPC
    jobs = secret.table("job_queue").select("id", count="exact").limit(1).execute()
    assert jobs.count is not None
    email = f"sb-{uuid.uuid4().hex[:10]}@example.test"
    created = secret.auth.admin.create_user({"email": email, "password": PASSWORD,
                                             "email_confirm": True})
    assert created.user.email == email
    path = f"sb-keys/{uuid.uuid4()}.png"
    secret.storage.from_("generated-images").upload(path, b"\x89PNG\r\n\x1a\n",
                                                    {"content-type": "image/png"})
    secret.storage.from_("generated-images").remove([path])


def test_the_publishable_key_acts_as_anon(stack_state: StackState) -> None:
    publishable = _client(stack_state, stack_state.keys.publishable_key)
    assert publishable.table("models").select("id").limit(1).execute().data
    with pytest.raises(APIError) as refused:
        publishable.rpc("next_scheduled_at").execute()
    assert refused.value.code == "42501"


def test_a_user_token_beside_the_publishable_key_acts_as_the_user(
    stack_state: StackState,
) -> None:
    publishable = _client(stack_state, stack_state.keys.publishable_key)
    email = f"sb-{uuid.uuid4().hex[:10]}@example.test"
    session = publishable.auth.sign_up({"email": email, "password": PASSWORD}).session
    assert session is not None
    answer = httpx.get(
        f"{stack_state.url}/auth/v1/user",
        headers={"apikey": stack_state.keys.publishable_key,
                 "Authorization": f"Bearer {session.access_token}"},
    )
    assert answer.status_code == 200 and answer.json()["email"] == email


def test_the_gateway_refuses_bad_uses_of_sb_keys(stack_state: StackState) -> None:
    url = f"{stack_state.url}/rest/v1/models?select=id"
    keys = stack_state.keys
    unknown = httpx.get(url, headers={"apikey": "sb_secret_" + "x" * 32})
    assert (unknown.status_code, unknown.json()["message"]) == (401, "Invalid API key")
    # the secret key as a Bearer beside the publishable key is not a way up: not a JWT
    climb = httpx.get(url, headers={"apikey": keys.publishable_key,
                                    "Authorization": f"Bearer {keys.secret_key}"})
    assert (climb.status_code, climb.json()["code"]) == (401, "PGRST301")
    browser = httpx.get(url, headers={"apikey": keys.secret_key,
                                      "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert browser.status_code == 401
    assert browser.json()["message"] == "Forbidden use of secret API key in browser"


@pytest.mark.js
@pytest.mark.skipif(shutil.which("node") is None
                    or not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").exists(),
                    reason="needs node and the npm packages of tests/js")
def test_supabase_js_with_the_new_keys(stack_state: StackState) -> None:
    proc = subprocess.run(["node", str(JS_DIR / "api_keys.mjs")], cwd=JS_DIR,
                          env={**os.environ, **stack_state.env()}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, json.dumps(failed or report, indent=2)
    assert len(report["checks"]) == 5
