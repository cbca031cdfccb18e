"""Webhook deliveries signed the way Replicate signs them (Standard Webhooks).

Headers: ``webhook-id`` (the same on retries and duplicates: receivers dedupe on it),
``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``f"{id}.{timestamp}.{body}"`` with key ``base64decode(secret.split("_")[1])``.

Deliveries never follow redirects (a 3xx is a failed attempt), are retried on non-2xx and
network errors with exponential backoff, and can be delayed, dropped or duplicated on
purpose (``webhook_*`` knobs).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from devstack.fake_replicate.config import FakeConfig, Stats

log = logging.getLogger("devstack.fake_replicate.webhooks")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for ``body``."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (localhost, 127.0.0.0/8, ::1)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_webhook_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


class WebhookSender:
    """Delivers prediction snapshots to webhook URLs with one shared ``httpx.AsyncClient``."""

    def __init__(
        self, get_config: Callable[[], FakeConfig], stats: Callable[[], Stats], rng: random.Random
    ) -> None:
        self._config = get_config
        self._stats = stats
        self._rng = rng
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, url: str, body: bytes) -> bool:
        """Deliver one event (with retries, drops and duplicates). True when a 2xx was seen."""
        cfg = self._config()
        if not cfg.webhook_allow_any_host and not is_loopback_url(url):
            self._stats().webhooks["refused"] += 1
            log.warning(
                "webhook to %s refused: not a loopback host "
                "(set webhook_allow_any_host to allow it)",
                url,
            )
            return False
        if cfg.webhook_delay_seconds:
            await asyncio.sleep(cfg.webhook_delay_seconds)
        if self._rng.random() < cfg.webhook_drop_rate:
            self._stats().webhooks["dropped"] += 1
            return False
        webhook_id = new_webhook_id()
        ok = await self._attempts(url, body, webhook_id, cfg)
        if ok and self._rng.random() < cfg.webhook_duplicate_rate:
            self._stats().webhooks["duplicated"] += 1
            await self._attempts(url, body, webhook_id, cfg)
        return ok

    async def _attempts(self, url: str, body: bytes, webhook_id: str, cfg: FakeConfig) -> bool:
        for attempt in range(cfg.webhook_max_attempts):
            if attempt:
                await asyncio.sleep(cfg.webhook_retry_base_seconds * 2 ** (attempt - 1))
            if await self._post(url, body, webhook_id, cfg):
                return True
        self._stats().webhooks["gave_up"] += 1
        log.warning(
            "webhook %s to %s: gave up after %d attempts", webhook_id, url, cfg.webhook_max_attempts
        )
        return False

    async def _post(self, url: str, body: bytes, webhook_id: str, cfg: FakeConfig) -> bool:
        client = self._client
        if client is None:
            return False
        stats = self._stats()
        stats.webhooks["attempted"] += 1
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "Replicate-Webhooks/fake",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(cfg.webhook_secret, webhook_id, ts, body),
        }
        try:
            response = await client.post(
                url, content=body, headers=headers, timeout=cfg.webhook_timeout_seconds
            )
        except (httpx.HTTPError, OSError, ValueError) as exc:
            log.debug("webhook %s to %s failed: %s", webhook_id, url, exc)
            stats.webhooks["failed"] += 1
            return False
        if 200 <= response.status_code < 300:
            stats.webhooks["sent"] += 1
            return True
        stats.webhooks["failed"] += 1
        log.debug("webhook %s to %s answered %s", webhook_id, url, response.status_code)
        return False
