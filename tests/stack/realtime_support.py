"""Helpers shared by the Realtime tests: users, rows, a supabase-py event recorder and a
driver for tests/js/realtime.mjs. No part of the stack is replaced here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devstack.keys import StackKeys

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def node_available() -> bool:
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "@supabase").is_dir()


def create_user(conn: psycopg.Connection[Any], keys: StackKeys, ttl: int = 3600
                ) -> tuple[uuid.UUID, str]:
    """A row in auth.users and an access token for it (what GoTrue would issue)."""
    uid = uuid.uuid4()
    conn.execute("insert into auth.users (id, email) values (%s, %s)", [uid, f"{uid}@rt.test"])
    now = int(time.time())
    token = keys.sign({"sub": str(uid), "role": "authenticated", "aud": "authenticated",
                       "iat": now, "exp": now + ttl})
    return uid, token


def create_generation(conn: psycopg.Connection[Any], user_id: uuid.UUID | None,
                      prompt: str = "a lighthouse", **columns: Any) -> str:
    # A generation names a catalogue model (the database refuses one that does not).
    cols = {"user_id": user_id, "prompt": prompt, "model": "FLUX Schnell", **columns}
    query = sql.SQL("insert into public.image_generations ({}) values ({}) returning id").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join([sql.Placeholder()] * len(cols)),
    )
    row = conn.execute(query, list(cols.values())).fetchone()
    assert row is not None
    return str(row[0])


SUBSCRIBED = "Subscribed to PostgreSQL"  # the server's system message once changes flow


class Recorder:
    """Collects supabase-py callbacks (sync, called in the client's listen task)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.states: list[tuple[float, str, str | None]] = []
        self.systems: list[tuple[float, str, str]] = []  # (time, status, message)

    def on_system(self, payload: Any) -> None:
        with contextlib.suppress(Exception):
            self.systems.append((time.monotonic(), str(payload.status), str(payload.message)))

    async def wait_subscribed(self, after: float = 0.0, timeout: float = 10.0) -> float:
        """The server's "Subscribed to PostgreSQL": only from then on are changes delivered
        (the join reply, which makes supabase-py say SUBSCRIBED, comes before it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, status, message in self.systems:
                if status == "ok" and message == SUBSCRIBED and t >= after:
                    return t
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {SUBSCRIBED!r} within {timeout}s; system: {self.systems!r}, "
                             f"states: {self.states!r}")

    def on_change(self, payload: Any) -> None:
        # a raising callback would kill the client's listen task
        with contextlib.suppress(Exception):
            self.events.append(payload["data"])

    def on_state(self, state: Any, err: Exception | None) -> None:
        self.states.append((time.monotonic(), str(getattr(state, "value", state)),
                            str(err) if err else None))

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
                       ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if pred(event):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout}s; got {self.events!r}")

    async def wait_state(self, state: str, after: float = 0.0, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, s, _ in self.states:
                if s == state and t >= after:
                    return t
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {state} within {timeout}s; states: {self.states!r}")

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [e for e in self.events if pred(e)]


class JsClient:
    """tests/js/realtime.mjs as a subprocess: JSON lines out, commands in."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["node", str(JS_DIR / "realtime.mjs")],
            cwd=JS_DIR,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            item["_mono"] = time.monotonic()
            self._queue.put(item)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _drain(self) -> None:
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def expect(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
               after: float = 0.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            for item in self.lines:
                if item["_mono"] >= after and pred(item):
                    return item
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(
                    f"JS: no matching line within {timeout}s (exit={self.proc.poll()}); lines: "
                    f"{self.lines!r}; stderr: {''.join(self._stderr)[-2000:]}"
                )
            time.sleep(0.02)

    def statuses(self, channel: str, status: str, after: float = 0.0) -> list[dict[str, Any]]:
        self._drain()
        return [i for i in self.lines if i.get("kind") == "status" and i["channel"] == channel
                and i["status"] == status and i["_mono"] >= after]

    def changes(self, channel: str, after: float = 0.0) -> list[dict[str, Any]]:
        self._drain()
        return [i for i in self.lines if i.get("kind") == "change" and i["channel"] == channel
                and i["_mono"] >= after]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"cmd":"quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
