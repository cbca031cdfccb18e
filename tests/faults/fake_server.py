"""A fake Replicate in a process of its own, for tests that restart the stack's server.

The stack's server process also hosts its fake Replicate, so restarting it would forget
every prediction in flight, which the real Replicate never does when Supabase restarts.
``python -m tests.faults.fake_server --port N`` serves the same fake on its own port.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Iterator

import httpx
import uvicorn

from devstack.fake_replicate.app import create_app
from devstack.pg import free_port
from tests.support import ROOT, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.fake_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(public_url=f"http://127.0.0.1:{args.port}")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


@contextlib.contextmanager
def standalone_fake() -> Iterator[str]:
    """Yields the fake's API base URL (``http://127.0.0.1:<port>/v1``)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.fake_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the standalone fake exited with {proc.returncode}")
        try:
            return httpx.get(f"{base}/_fake/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 20, interval=0.1, message="the standalone fake Replicate")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


if __name__ == "__main__":
    main()
