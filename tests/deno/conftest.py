"""A stack of its own for the Deno edge functions (tests/deno): Postgres, the local Supabase
server and the fake Replicate, with these names served by real Deno behind the gateway's
JWT check (devstack.edge) instead of functions_compat:

    start-generation           supabase/functions/start-generation/index.ts (ours, shipped)
    original-start-generation  tests/deno/original_start_generation.ts (the original, a fixture)
    broken                     tests/deno/broken_function.ts (fails at import)

The fixtures of tests/conftest.py (picture, fake, admin_conn, quiet_queue, ...) follow,
since ``stack_state`` is overridden for this package. Deno is the pinned npm package in
tests/js; DENO_DIR is the project's git-ignored .cache/deno (npm packages fetched once).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import Stack, StackState
from tests.support import ROOT

DENO = ROOT / "tests" / "js" / "node_modules" / ".bin" / "deno"
DENO_DIR = ROOT / ".cache" / "deno"
HERE = Path(__file__).resolve().parent
FUNCTIONS = {
    "start-generation": ROOT / "supabase" / "functions" / "start-generation" / "index.ts",
    "original-start-generation": HERE / "original_start_generation.ts",
    "broken": HERE / "broken_function.ts",
}


@pytest.fixture(scope="package")
def stack(stack_root: Path) -> Iterator[Stack]:
    if not DENO.exists():
        pytest.fail(f"{DENO} is missing: run scripts/setup.sh test (it installs tests/js)")
    st = Stack(
        stack_root / "deno-stack",
        fast=True,
        deno_functions=FUNCTIONS,
        deno=str(DENO),
        deno_dir=DENO_DIR,
    )
    st.up()
    try:
        state = st.state()
        for name in ("start-generation", "original-start-generation"):
            # The first run of a function fetches its npm: packages into DENO_DIR.
            answer = httpx.options(f"{state.url}/functions/v1/{name}", timeout=180)
            assert answer.status_code == 200, (name, answer.text, edge_log(st, name))
        yield st
    finally:
        st.down()


@pytest.fixture(scope="package")
def stack_state(stack: Stack) -> StackState:
    return stack.state()


@pytest.fixture(scope="package")
def stack_env(stack_state: StackState) -> dict[str, str]:
    return dict(stack_state.env())


def edge_log(stack: Stack, name: str) -> str:
    path = stack.root / f"edge-{name}.log"
    return path.read_text()[-3000:] if path.exists() else "(no log)"
