"""`picture-worker generate`: one generation by hand against the session stack and a running
daemon, with nothing but what a client app has (SUPABASE_URL and the public key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from devstack.stack import StackState
from tests.support import ROOT, Fake, Picture, running_worker

pytestmark = pytest.mark.timeout(180)


def generate(state: StackState, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("WORKER_", "SUPABASE_", "REPLICATE_"))}
    base.update({"SUPABASE_URL": state.url, "SUPABASE_ANON_KEY": state.keys.anon_key, **env})
    return subprocess.run(
        [sys.executable, "-m", "worker", "generate", *args],
        env=base, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


def test_generate_wait_shows_the_statuses_and_saves_an_image_that_downloads(
    stack_state: StackState, fake: Fake, log_dir: Path, tmp_path: Path, quiet_queue: None
) -> None:
    with running_worker(stack_state, log_dir):
        proc = generate(stack_state, "a red fox in snow", "--wait", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = re.findall(r"^\s+(\w+)\s+[\d.]+ s$", proc.stdout, re.M)
    # subscribed before the request: every status is seen, in order, as it happens
    assert statuses == ["queued", "processing", "downloading", "completed"], proc.stdout
    url = re.search(r"^image: (\S+)$", proc.stdout, re.M)
    saved = re.search(r"^saved: (\S+) \((\d+) bytes\)$", proc.stdout, re.M)
    assert url and saved, proc.stdout
    body = httpx.get(url.group(1), timeout=10).content
    assert body == Path(saved.group(1)).read_bytes() and len(body) == int(saved.group(2)) > 100
    assert stack_state.keys.service_role_key not in proc.stdout + proc.stderr


def test_generate_with_a_users_token_and_a_model_name(
    stack_state: StackState, picture: Picture, quiet_queue: None
) -> None:
    signup = httpx.post(
        f"{stack_state.url}/auth/v1/signup",
        headers={"apikey": stack_state.keys.anon_key},
        json={"email": f"gen-{uuid.uuid4().hex[:8]}@example.test", "password": "correct-horse-42"},
        timeout=10,
    ).json()
    token, user_id = signup["access_token"], signup["user"]["id"]
    proc = generate(stack_state, "a heron", "--model", "SDXL", "--token", token)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gid = re.search(r"generation ([0-9a-f-]{36}) queued \(model stability-ai/sdxl\)", proc.stdout)
    assert gid, proc.stdout
    row = picture.generation(gid.group(1))
    assert row["user_id"] == user_id and row["status"] in ("queued", "processing")
    assert "signed up" not in proc.stdout


def test_generate_refuses_an_unknown_model_before_signing_anyone_up(
    stack_state: StackState,
) -> None:
    proc = generate(stack_state, "x", "--model", "no/such-model")
    assert proc.returncode == 1
    assert "unknown or inactive model 'no/such-model'" in proc.stderr
    assert "black-forest-labs/flux-schnell" in proc.stderr
    assert "signed up" not in proc.stdout


def test_generate_never_creates_users_on_a_hosted_project(stack_state: StackState) -> None:
    # A project URL that is not loopback: generate must ask for credentials, not sign up.
    proc = generate(stack_state, "x", SUPABASE_URL="https://abcdefgh.supabase.co")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "picture-worker: sign in as an existing user: pass --token, or --email and "
        "--password (generate creates users only on the local stack)"
    ]


def test_generate_without_the_public_key_is_a_configuration_error(
    stack_state: StackState,
) -> None:
    proc = generate(stack_state, "x", SUPABASE_ANON_KEY="")
    assert proc.returncode == 2
    assert "SUPABASE_PUBLISHABLE_KEY" in proc.stderr
