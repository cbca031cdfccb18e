"""replicate-webhook's input limits (issue 11 point 6).

- ``webhook-timestamp`` is ASCII digits only: ``²`` (a digit to ``str.isdigit``, not to
  ``int``) is a clean 400, never a 500;
- the signature headers and the timestamp are checked before a byte of the body is read;
- the body streams through the HMAC under a cap of 4/3 x WORKER_MAX_IMAGE_BYTES + 64 KiB:
  past it, a 413 at once, with the rest left unread.

The in-process cases drive the app through httpx's ASGI transport with a body generator
that records what the app pulled; the others go through the session stack's real server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from functions_compat.app import create_app
from tests.webhooks.conftest import Hook, prediction_body, signature
from worker.webhooks import SignatureCheck, WebhookSignatureError, sign, verify_signature

pytestmark = pytest.mark.usefixtures("quiet_queue")

CHUNK = 16 * 1024


@dataclass
class Body:
    """A request body handed to the app chunk by chunk, counting what it pulled."""

    data: bytes
    pulled: int = 0
    chunks: int = 0
    sizes: list[int] = field(default_factory=list)

    async def stream(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), CHUNK):
            chunk = self.data[start : start + CHUNK]
            self.pulled += len(chunk)
            self.chunks += 1
            yield chunk


def _cap(max_image_bytes: int) -> int:
    return 4 * math.ceil(max_image_bytes / 3) + 64 * 1024


def _post(env: dict[str, str], body: Body, headers: dict[str, str]) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(env))
        async with httpx.AsyncClient(transport=transport, base_url="http://functions") as client:
            return await client.post(
                "/functions/v1/replicate-webhook", content=body.stream(), headers=headers
            )

    return asyncio.run(post())


def _padded(size: int) -> bytes:
    """A succeeded prediction of exactly ``size`` bytes (an img2img data URI echoed back)."""
    base = prediction_body(input={"prompt": "x", "image": "data:image/png;base64,"})
    missing = size - len(base)
    assert missing >= 0
    doc = json.loads(base)
    doc["input"]["image"] += "A" * missing
    data = json.dumps(doc).encode()
    assert len(data) == size
    return data


# -- webhook-timestamp: ASCII digits only ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xb2", b"17\xb3", b"\xb9" * 10, b"+1700000000", b"-1", b"1e9", b"0x10", b"1" * 13,
     b"9" * 5000, b"\xd9\xa1\xd9\xa2"],
    ids=["superscript two", "trailing superscript", "superscript ones", "plus sign", "negative",
         "exponent", "hex", "13 digits", "5000 digits", "arabic-indic digits as utf-8"],
)
def test_a_non_ascii_or_malformed_timestamp_is_a_clean_400(
    hook: Hook, raw: bytes, admin_conn: psycopg.Connection
) -> None:
    body = prediction_body()
    headers: list[tuple[bytes, bytes]] = [
        (k.encode(), v.encode()) for k, v in hook.headers(body).items()
        if k != "webhook-timestamp"
    ]
    headers.append((b"webhook-timestamp", raw))
    response = httpx.post(hook.url, content=body, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "webhook-timestamp must be unix seconds (ASCII digits)"}
    pid = json.loads(body)["id"]
    rows = admin_conn.execute(
        "select count(*) from public.webhook_deliveries where prediction_id = %s", (pid,)
    ).fetchone()
    assert rows == (0,)


@pytest.mark.parametrize("stamp", ["²", "١٧٠٠٠٠٠٠٠٠", "１７００", "17 00", "9" * 5000])
def test_the_worker_side_check_refuses_non_ascii_digits_cleanly(stamp: str) -> None:
    secret = "whsec_" + "QUJD" * 8
    headers = {"webhook-id": "msg_1", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}
    for tolerance in (300, None):
        with pytest.raises(WebhookSignatureError, match="not a unix timestamp"):
            verify_signature(secret, headers, b"{}", tolerance_s=tolerance)


# -- headers and timestamp before the body ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status"),
    [("no signature", 400), ("superscript timestamp", 400), ("stale timestamp", 401),
     ("future timestamp", 401), ("long webhook-id", 400)],
)
def test_headers_and_timestamp_are_checked_before_the_body_is_read(
    stack_env: dict[str, str], hook: Hook, case: str, status: int
) -> None:
    data = prediction_body()
    headers = hook.headers(data)
    if case == "no signature":
        del headers["webhook-signature"]
    elif case == "stale timestamp":
        headers = hook.headers(data, timestamp=int(time.time()) - 3600)
    elif case == "future timestamp":
        headers = hook.headers(data, timestamp=int(time.time()) + 3600)
    else:
        headers["webhook-id"] = "m" * 300
    body = Body(data)
    if case == "superscript timestamp":
        # httpx encodes str headers as ASCII; send the latin-1 byte the server would decode.
        response = _post_raw_header(stack_env, body, headers, b"webhook-timestamp", b"\xb2")
    else:
        response = _post(stack_env, body, headers)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert body.pulled == 0, f"{body.pulled} body bytes were read before the headers were refused"


def _post_raw_header(
    env: dict[str, str], body: Body, headers: dict[str, str], name: bytes, value: bytes
) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(env))
        raw = [(k.encode(), v.encode()) for k, v in headers.items() if k.encode() != name]
        raw.append((name, value))
        async with httpx.AsyncClient(transport=transport, base_url="http://functions") as client:
            return await client.post(
                "/functions/v1/replicate-webhook", content=body.stream(), headers=raw
            )

    return asyncio.run(post())


def test_a_valid_delivery_streams_through_the_hmac_in_chunks(
    stack_env: dict[str, str], hook: Hook
) -> None:
    data = _padded(200 * 1024)  # 13 chunks; over 64 KiB, so the job fetches the prediction
    body = Body(data)
    response = _post(stack_env, body, hook.headers(data))
    assert response.status_code == 200, response.text
    assert body.pulled == len(data) and body.chunks > 10
    # The same bytes with one byte changed in the last chunk are refused.
    tampered = Body(data[:-2] + b" }")
    response = _post(stack_env, tampered, hook.headers(data))
    assert response.status_code == 401, response.text


def test_the_streaming_check_matches_the_one_shot_signature() -> None:
    secret = "whsec_" + "QUJD" * 8
    data = _padded(100 * 1024)
    stamp = int(time.time())
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, "msg_x", stamp, data),
    }
    check = SignatureCheck(secret, headers)
    for start in range(0, len(data), 777):
        check.update(data[start : start + 777])
    check.verify()
    assert signature(secret, "msg_x", stamp, data) == headers["webhook-signature"]
    broken = SignatureCheck(secret, headers)
    broken.update(data[:-1])
    with pytest.raises(WebhookSignatureError):
        broken.verify()


# -- the body cap --------------------------------------------------------------------------------


def test_the_cap_is_four_thirds_of_the_image_cap_plus_64_kib(
    stack_env: dict[str, str], hook: Hook
) -> None:
    env = {**stack_env, "WORKER_MAX_IMAGE_BYTES": str(30 * 1024)}
    cap = _cap(30 * 1024)
    at_cap = _padded(cap)
    response = _post(env, Body(at_cap), hook.headers(at_cap))
    assert response.status_code == 200, response.text
    over = _padded(cap + 1)
    response = _post(env, Body(over), hook.headers(over))
    assert response.status_code == 413, response.text
    assert response.json() == {"error": f"Request body too large (limit {cap} bytes)"}


def test_an_endless_body_is_refused_while_streaming_without_reading_it_all(
    stack_env: dict[str, str], hook: Hook
) -> None:
    env = {**stack_env, "WORKER_MAX_IMAGE_BYTES": str(30 * 1024)}
    cap = _cap(30 * 1024)
    data = b"x" * (64 * 1024 * 1024)  # no Content-Length: sent chunked
    body = Body(data)
    response = _post(env, body, hook.headers(b"anything"))
    assert response.status_code == 413, response.text
    assert cap < body.pulled <= cap + CHUNK, body.pulled


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    stack_env: dict[str, str], hook: Hook
) -> None:
    env = {**stack_env, "WORKER_MAX_IMAGE_BYTES": str(30 * 1024)}
    body = Body(b"x" * (1024 * 1024))
    headers = {**hook.headers(body.data), "content-length": str(len(body.data))}
    response = _post(env, body, headers)
    assert response.status_code == 413, response.text
    assert body.pulled == 0


def test_on_the_stack_a_delivery_echoing_a_20_mib_source_is_accepted_and_one_past_the_cap_is_not(
    hook: Hook,
) -> None:
    """The default cap (WORKER_MAX_IMAGE_BYTES = 25 MiB): 4/3 of it + 64 KiB, about 33.4 MiB.
    A 20 MiB img2img source echoed as base64 (26.7 MiB) passes; the old 16 MiB cap refused it."""
    echoed = _padded(4 * math.ceil(20 * 1024 * 1024 / 3) + 2048)
    response = hook.deliver(echoed)
    assert response.status_code == 200, response.text
    over = b"x" * (_cap(25 * 1024 * 1024) + 1)
    response = hook.deliver(over)
    assert response.status_code == 413
    assert response.json() == {
        "error": f"Request body too large (limit {_cap(25 * 1024 * 1024)} bytes)"
    }
