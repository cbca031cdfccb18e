"""A recording HTTP proxy in front of the fake Replicate.

The fake counts requests per endpoint only; to bound retries *per prediction and per
generation* the worker talks to Replicate through this proxy, which forwards every request
unchanged and records when it was made, what it asked for and what it got back.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

FORWARDED = ("authorization", "prefer", "cancel-after", "content-type")
RETURNED = ("content-type", "location", "retry-after")
_GET_ONE = re.compile(r"^/v1/predictions/([A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class Exchange:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    status: int
    prompt: str | None  # creates: input.prompt
    prediction_id: str | None  # creates: the id answered; GETs: the id asked for

    @property
    def is_create(self) -> bool:
        return self.method == "POST" and self.path.endswith("/predictions")


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:<port> (no /v1)
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(90.0, connect=5.0))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)

    # -- views ------
    def creates_by_prompt(self) -> dict[str, list[Exchange]]:
        out: dict[str, list[Exchange]] = defaultdict(list)
        for ex in self.snapshot():
            if ex.is_create and ex.prompt is not None:
                out[ex.prompt].append(ex)
        return dict(out)

    def gets_by_prediction(self) -> dict[str, list[Exchange]]:
        out: dict[str, list[Exchange]] = defaultdict(list)
        for ex in self.snapshot():
            if ex.method == "GET" and ex.prediction_id is not None:
                out[ex.prediction_id].append(ex)
        return dict(out)

    # -- the server ------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _forward(self) -> None:
                at = time.monotonic()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
                try:
                    upstream = proxy._client.request(
                        self.command, proxy.upstream + self.path, content=body, headers=headers
                    )
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                proxy.record(_exchange(at, self.command, self.path, body, upstream))
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() in RETURNED:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = _forward
            do_POST = _forward

        return Handler


def _exchange(
    at: float, method: str, path: str, body: bytes | None, response: httpx.Response
) -> Exchange:
    prompt = prediction_id = None
    if method == "POST" and path.endswith("/predictions"):
        try:
            prompt = str(json.loads(body or b"{}").get("input", {}).get("prompt"))
        except (ValueError, AttributeError):
            prompt = None
        if response.status_code in (200, 201, 202):
            prediction_id = str(response.json().get("id"))
    elif method == "GET" and (match := _GET_ONE.match(path)):
        prediction_id = match.group(1)
    return Exchange(at, method, path, response.status_code, prompt, prediction_id)
