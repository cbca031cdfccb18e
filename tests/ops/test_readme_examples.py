"""The README's "Your first generation" examples (curl and supabase-py), run as they stand
against the session stack with a daemon running, and the stack's env-file output that the
deployment guide hands to `podman run --env-file`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import Stack, StackState
from tests.support import ROOT, Fake, running_worker

pytestmark = pytest.mark.timeout(180)


def _example(kind: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- first-generation: {kind} -->\n```\w+\n(.*?)```", text, re.S)
    assert m, f"README has no {kind} example"
    return m.group(1)


def _client_env(state: StackState) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WORKER_", "SUPABASE_", "REPLICATE_"))}
    env.update({"SUPABASE_URL": state.url, "SUPABASE_ANON_KEY": state.keys.anon_key})
    return env


@pytest.mark.parametrize("kind", ["curl", "python"])
def test_the_first_generation_examples_run_as_written(
    stack_state: StackState, fake: Fake, log_dir: Path, quiet_queue: None, kind: str
) -> None:
    code = _example(kind)
    command = ["bash", "-euo", "pipefail", "-c", code] if kind == "curl" else [
        sys.executable, "-c", code]
    with running_worker(stack_state, log_dir):
        proc = subprocess.run(command, env=_client_env(stack_state), capture_output=True,
                              text=True, timeout=90, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/storage/v1/object/public/generated-images/" in proc.stdout, proc.stdout
    if kind == "python":
        assert proc.stdout.startswith("completed ")


def test_stack_env_file_format_is_plain_key_value_lines(
    stack: Stack, stack_state: StackState
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "stack", "env", "--format", "env-file",
         "--root", str(stack.root)],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and all(re.fullmatch(r"[A-Z][A-Z0-9_]*=[^'\"#\s]*", line) for line in lines), lines
    assert dict(line.split("=", 1) for line in lines) == stack_state.env()
