"""The seed's client code in supabase-js (tests/js/seed_client.mjs) against the local stack and
the worker daemon: start-generation, a Realtime UPDATE subscription filtered by id, polling
``select('*, images(*)')`` and the image fetched from its public URL.

In the main test the daemon is started once the client's Realtime subscription is live, so
the job waits in the queue meanwhile (as it does behind a backlog) and every transition the
worker makes is one the client must see. With the daemon already running (second test) the
worker's Realtime pickup races the client's join: the client subscribes only after
start-generation answered, so it may legitimately miss ``processing``; that test asserts the
order of what it sees and the end result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from devstack.stack import StackState
from tests.e2e.conftest import (
    assert_completed_row,
    assert_ordered_ending_completed,
    assert_realtime_sequence,
    fetch_image,
)
from tests.integration.conftest import statuses
from tests.stack.realtime_support import JS_DIR, node_available
from tests.support import ROOT, Fake, running_worker

pytestmark = [
    pytest.mark.js,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("quiet_queue"),
    pytest.mark.skipif(not node_available(), reason="needs node and tests/js/node_modules"),
]

SCRIPT = JS_DIR / "seed_client.mjs"
CLIENT_TIMEOUT_S = 60


def committed(conn: psycopg.Connection, gid: str) -> list[str]:
    """The statuses the database committed for a generation.

    start-generation creates the row and its job in one transaction (``create_generation``),
    so the row may be born ``queued``; an initial ``pending`` is not required.
    """
    seen = statuses(conn, gid)
    return seen[1:] if seen[:1] == ["pending"] else seen


class NodeClient:
    """``node seed_client.mjs`` with its stderr progress lines read as they arrive."""

    def __init__(self, state: StackState) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "SEED_"))}
        env.update(
            {
                "SUPABASE_URL": state.url,
                "SUPABASE_ANON_KEY": state.keys.anon_key,
                "SEED_TIMEOUT_MS": str(CLIENT_TIMEOUT_S * 1000),
            }
        )
        self.proc = subprocess.Popen(
            ["node", str(SCRIPT)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], progress: bool) -> None:
        for line in stream:
            (self.stderr if progress else self.stdout).append(line)
            if progress:
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        self.events.put(doc)

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"node exited early: {self.diagnostics()}") from None
                continue
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} from node within {timeout}s: {self.diagnostics()}")

    def result(self, timeout: float) -> tuple[int, dict[str, Any]]:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        text = "".join(self.stdout).strip()
        try:
            doc = json.loads(text)
        except ValueError:
            raise AssertionError(f"node printed no JSON document: {self.diagnostics()}") from None
        assert isinstance(doc, dict), text
        return code, doc

    def diagnostics(self) -> str:
        return f"stdout={''.join(self.stdout)[-3000:]!r} stderr={''.join(self.stderr)[-3000:]!r}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_seed_client_in_supabase_js_sees_every_status_and_a_decodable_image(
    stack_state: StackState, fake: Fake, status_log: psycopg.Connection, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.5)
    client = NodeClient(stack_state)
    try:
        gid = str(client.wait_event("subscribed", timeout=30)["generation_id"])
        assert committed(status_log, gid) == ["queued"]  # no worker yet
        with running_worker(stack_state, log_dir) as worker:
            code, doc = client.result(timeout=CLIENT_TIMEOUT_S + 10)
        assert code == 0 and doc["ok"] is True, client.diagnostics()
    finally:
        client.close()

    # start-generation answered the seed's contract.
    invoke = doc["invoke"]
    assert invoke["success"] is True and invoke["status"] == "queued", invoke
    assert invoke["generation_id"] == gid and invoke["job_id"], invoke

    # Realtime: the worker's transitions, in order, nothing after completed, never failed.
    assert doc["subscribe_states"][0] == "SUBSCRIBED", doc["subscribe_states"]
    assert_realtime_sequence(doc["realtime_statuses"])
    # The database committed exactly the seed's status sequence.
    assert committed(status_log, gid) == ["queued", "processing", "downloading", "completed"]
    assert doc["poll_statuses"][0] in ("queued", "processing"), doc["poll_statuses"]
    assert doc["poll_statuses"][-1] == "completed", doc["poll_statuses"]

    # The polled row and its one image.
    user_id = str(doc["user_id"])
    image_row = assert_completed_row(doc["row"], user_id, gid)
    assert doc["public_url"] == image_row["public_url"], (doc["public_url"], image_row)

    # The bytes node fetched decode, and are the stored object's.
    seen = doc["image"]
    assert seen["format"] == image_row["format"] == "webp", (seen, image_row)
    assert seen["content_type"] == "image/webp", seen
    assert seen["bytes"] == image_row["file_size"], (seen, image_row)
    body, image, content_type = fetch_image(doc["public_url"])
    assert hashlib.sha256(body).hexdigest() == seen["sha256"]
    assert image.format == "WEBP" and content_type == "image/webp"
    assert image.size == (seen["width"], seen["height"]), (image.size, seen)

    # The daemon did the work, through the queue.
    done = [e for e in worker.actions("job.completed") if e.get("generation_id") == gid]
    assert sorted(e["job_type"] for e in done) == ["download-image", "generate-image"], done


def test_seed_client_in_supabase_js_with_the_daemon_already_running(
    stack_state: StackState, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.5)
    with running_worker(stack_state, log_dir) as worker:
        worker.wait_subscribed()
        client = NodeClient(stack_state)
        try:
            code, doc = client.result(timeout=CLIENT_TIMEOUT_S + 10)
        finally:
            client.close()
    assert code == 0 and doc["ok"] is True, client.diagnostics()
    gid = str(doc["generation_id"])
    assert_ordered_ending_completed(doc["realtime_statuses"])
    image_row = assert_completed_row(doc["row"], str(doc["user_id"]), gid)
    assert doc["image"]["bytes"] == image_row["file_size"], (doc["image"], image_row)
    body, image, _ = fetch_image(doc["public_url"])
    assert hashlib.sha256(body).hexdigest() == doc["image"]["sha256"]
    assert image.size == (doc["image"]["width"], doc["image"]["height"])
    jobs = [e for e in worker.actions("job.started") if e.get("generation_id") == gid]
    assert jobs, "the running daemon picked the job up"
