"""Fixtures of the webhook-mode tests (all against the session's real local stack).

- ``hook``: signs deliveries the way Replicate does (an independent implementation of the
  Standard Webhooks scheme, not the project's) and POSTs them to the stack's
  ``/functions/v1/replicate-webhook``.
- ``webhook_env``: the worker's environment for webhook mode on the stack.
- ``fake``: the shared fixture (tests/conftest.py), configured with the stack's webhook secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack.stack import StackState
from tests.support import Fake

TOKEN = "r8_local_fake_token"


def signature(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def prediction_body(status: str = "succeeded", pid: str | None = None, **extra: Any) -> bytes:
    pid = pid or f"test{uuid.uuid4().hex[:20]}"
    body = {
        "id": pid,
        "model": "black-forest-labs/flux-schnell",
        "version": "hidden",
        "input": {"prompt": "a lighthouse"},
        "output": [f"https://replicate.delivery/xezq/{pid}/out-0.webp"]
        if status == "succeeded"
        else None,
        "error": None,
        "status": status,
        "metrics": {"predict_time": 1.25},
        **extra,
    }
    return json.dumps(body).encode()


@dataclass
class Hook:
    url: str
    secret: str

    def headers(
        self,
        body: bytes,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        wid = webhook_id or f"msg_{uuid.uuid4().hex}"
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "content-type": "application/json",
            "webhook-id": wid,
            "webhook-timestamp": str(ts),
            "webhook-signature": signature(secret or self.secret, wid, ts, body),
        }

    def post(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        return httpx.post(self.url, content=body, headers=dict(headers), timeout=30)

    def deliver(self, body: bytes, **kwargs: Any) -> httpx.Response:
        return self.post(body, self.headers(body, **kwargs))


@pytest.fixture(scope="session")
def hook(stack_state: StackState) -> Hook:
    return Hook(f"{stack_state.url}/functions/v1/replicate-webhook", stack_state.webhook_secret)


@pytest.fixture(scope="session")
def webhook_env(stack_state: StackState) -> dict[str, str]:
    return {
        "WORKER_WEBHOOK_URL": f"{stack_state.url}/functions/v1/replicate-webhook",
        "REPLICATE_WEBHOOK_SECRET": stack_state.webhook_secret,
    }


@pytest.fixture
def fake(stack_state: StackState) -> Iterator[Fake]:
    f = Fake(stack_state)
    f.reset()
    # The stack starts its fake with its own secret, and a reset keeps it; say so anyway.
    f.configure(webhook_secret=stack_state.webhook_secret, webhook_retry_base_seconds=0.05)
    yield f
    f.reset()


def create_prediction(state: StackState, prompt: str, **body: Any) -> dict[str, Any]:
    """A prediction on the fake Replicate, created directly (not through the worker)."""
    response = httpx.post(
        f"{state.replicate_url}/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": prompt}, **body},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    return dict(response.json())


def get_prediction(state: StackState, pid: str) -> dict[str, Any]:
    response = httpx.get(
        f"{state.replicate_url}/predictions/{pid}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    return dict(response.json())
