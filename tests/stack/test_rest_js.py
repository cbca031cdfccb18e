"""/rest/v1 through supabase-js on Node: runs tests/js/rest.mjs against the session stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.stack import StackState
from tests.stack.rest_support import admin_connect, create_user, rest_objects, user_token

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "rest.mjs"
EXPECTED_CHECKS = 18

pytestmark = [
    pytest.mark.js,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").exists(),
        reason="npm packages of tests/js are not installed",
    ),
]


def test_supabase_js_against_rest(stack_state: StackState) -> None:
    with admin_connect(stack_state) as conn:
        uid = create_user(conn)
        generation = conn.execute(
            "insert into public.image_generations (user_id, prompt, model)"
            " values (%s, 'js', 'FLUX Schnell') "
            "returning id::text",
            (uid,),
        ).fetchone()
        assert generation is not None
    with rest_objects(stack_state) as objs:
        env = {
            **os.environ,
            **stack_state.env(),
            "REST_PREFIX": objs.prefix,
            "REST_USER_TOKEN": user_token(stack_state.keys, uid),
            "REST_USER_GENERATION": generation[0],
        }
        proc = subprocess.run(
            ["node", str(SCRIPT)],
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, json.dumps(failed or report, indent=2)
    names = [c["name"] for c in report["checks"]]
    assert len(names) == EXPECTED_CHECKS and len(set(names)) == EXPECTED_CHECKS, names
