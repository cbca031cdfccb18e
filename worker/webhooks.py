"""Replicate webhook signatures (the Standard Webhooks scheme).

A delivery carries ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
``webhook-signature`` (space-separated ``v1,<base64>`` entries). The signed content is
``f"{id}.{timestamp}.{raw body}"``, the key is the base64 part of the ``whsec_...`` secret,
and each signature is ``base64(HMAC-SHA256(key, content))``. Verify against the raw body
bytes, never a re-serialised JSON: ``SignatureCheck`` does so while the body streams in,
after checking the headers and the timestamp (ASCII digits only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from worker.errors import WorkerError

__all__ = [
    "SignatureCheck",
    "WebhookSignatureError",
    "is_unix_seconds",
    "sign",
    "verify_signature",
]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class WebhookSignatureError(WorkerError):
    """The webhook delivery is not signed by Replicate."""


def _key(secret: str) -> bytes:
    value = secret.strip()
    if value.startswith(SECRET_PREFIX):
        value = value[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError("the webhook secret is not whsec_<base64>") from None
    if not key:
        raise WebhookSignatureError("the webhook secret is empty")
    return key


def _prefix(webhook_id: str, timestamp: str) -> bytes:
    return webhook_id.encode() + b"." + timestamp.encode() + b"."


def _signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    content = _prefix(webhook_id, timestamp) + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` header value Replicate would send (``v1,<base64>``)."""
    return "v1," + _signature(_key(secret), webhook_id, str(timestamp), body)


class SignatureCheck:
    """Verify a delivery while its body streams in.

    The constructor checks the headers and the timestamp (so a stale or malformed delivery
    is refused before its body is read), ``update`` feeds body chunks into the HMAC, and
    ``verify`` compares the result with every ``v1`` signature in constant time. Each step
    raises WebhookSignatureError.
    """

    def __init__(
        self,
        secret: str,
        headers: Mapping[str, str],
        *,
        tolerance_s: int | None = DEFAULT_TOLERANCE_S,
        now: float | None = None,
    ) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        webhook_id = (lowered.get("webhook-id") or "").strip()
        timestamp = (lowered.get("webhook-timestamp") or "").strip()
        self._signatures = (lowered.get("webhook-signature") or "").strip()
        missing = [
            name
            for name, value in (
                ("webhook-id", webhook_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", self._signatures),
            )
            if not value
        ]
        if missing:
            raise WebhookSignatureError(f"missing header(s): {', '.join(missing)}")
        if not is_unix_seconds(timestamp):
            raise WebhookSignatureError("webhook-timestamp is not a unix timestamp")
        if tolerance_s is not None:
            current = time.time() if now is None else now
            skew = int(timestamp) - current
            if skew < -tolerance_s:
                raise WebhookSignatureError("webhook-timestamp is too old")
            if skew > tolerance_s:
                raise WebhookSignatureError("webhook-timestamp is in the future")
        self._mac = hmac.new(_key(secret), _prefix(webhook_id, timestamp), hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self._mac.update(chunk)

    def verify(self) -> None:
        expected = base64.b64encode(self._mac.digest())
        matched = False
        for entry in self._signatures.split():
            version, _, value = entry.partition(",")
            if version == "v1" and value:
                # Check every entry (no early exit), each in constant time.
                matched |= hmac.compare_digest(expected, value.encode("ascii", "replace"))
        if not matched:
            raise WebhookSignatureError("no valid v1 signature")


def is_unix_seconds(value: str) -> bool:
    """ASCII digits only, at most 12 of them (``"²"`` and ``"١٢"`` are digits to Python's
    ``str.isdigit`` but not to ``int`` or to Replicate)."""
    return _UNIX_SECONDS.fullmatch(value) is not None


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int | None = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise WebhookSignatureError unless ``body`` carries a valid signature.

    ``tolerance_s`` bounds how far the timestamp may be from ``now`` (either way); None
    skips that check (re-verifying a delivery that was queued earlier).
    """
    check = SignatureCheck(secret, headers, tolerance_s=tolerance_s, now=now)
    check.update(body)
    check.verify()
