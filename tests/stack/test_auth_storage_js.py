"""supabase-js 2.119 (auth + storage) against the local stack: runs tests/js/auth_storage.mjs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.stack import StackState

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "auth_storage.mjs"

pytestmark = pytest.mark.js


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None or not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir():
        pytest.skip("Node.js and tests/js/node_modules are needed (npm ci in tests/js)")
    return exe


def test_supabase_js_auth_and_storage(node: str, stack_state: StackState) -> None:
    env = {**os.environ, **stack_state.env()}
    proc = subprocess.run(
        [node, str(SCRIPT)],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from the script (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(lines[-1])
    assert report["ok"] is True, json.dumps(report, indent=2) + "\n" + proc.stderr
    assert proc.returncode == 0
    results = report["results"]
    expected = {
        "signUp", "signInWithPassword", "getUser", "refreshSession", "refresh reuse rejected",
        "wrong password", "duplicate signUp", "weak password", "createBucket", "getBucket",
        "upload Blob (multipart)", "upload Buffer (raw)", "download", "public URL fetch", "info",
        "list", "list folders", "exists", "duplicate upload error", "download missing error",
        "RLS denies user upload", "upsert", "remove", "removed object is gone", "deleteBucket",
        "signOut", "session cleared", "revoked session rejected",
    }  # fmt: skip
    assert expected <= set(results), sorted(expected - set(results))
    assert results["wrong password"]["code"] == "invalid_credentials"
    assert results["duplicate upload error"]["statusCode"] == "409"
    assert results["RLS denies user upload"]["statusCode"] == "403"
    assert results["exists"] == {"exists": True, "missing": False}
