"""Replicate webhook signatures (Standard Webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from worker.webhooks import WebhookSignatureError, sign, verify_signature

KEY = b"a fixed 32-byte test signing key"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"id":"q7m2z1v9xhrj00csx8pbv7v2yw","status":"succeeded","output":["https://replicate.delivery/x/out-0.webp"]}'
MSG_ID = "msg_2b8vWcH2tW8cPMX3ZXnqXQ9rPqA"
NOW = 1_762_160_400


def headers(signature: str, timestamp: int = NOW, msg_id: str = MSG_ID) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature}


def test_sign_matches_the_documented_scheme() -> None:
    content = f"{MSG_ID}.{NOW}.".encode() + BODY
    expected = base64.b64encode(hmac.new(KEY, content, hashlib.sha256).digest()).decode()
    assert sign(SECRET, MSG_ID, NOW, BODY) == f"v1,{expected}"


def test_valid_signature_passes() -> None:
    verify_signature(SECRET, headers(sign(SECRET, MSG_ID, NOW, BODY)), BODY, now=NOW + 10)


def test_header_names_are_case_insensitive() -> None:
    h = {k.title(): v for k, v in headers(sign(SECRET, MSG_ID, NOW, BODY)).items()}
    verify_signature(SECRET, h, BODY, now=NOW)


def test_tampered_body_is_rejected() -> None:
    sig = sign(SECRET, MSG_ID, NOW, BODY)
    with pytest.raises(WebhookSignatureError, match="no valid v1 signature"):
        verify_signature(SECRET, headers(sig), BODY.replace(b"succeeded", b"failed"), now=NOW)


def test_tampered_id_or_timestamp_is_rejected() -> None:
    sig = sign(SECRET, MSG_ID, NOW, BODY)
    with pytest.raises(WebhookSignatureError):
        verify_signature(SECRET, headers(sig, msg_id="msg_other"), BODY, now=NOW)
    with pytest.raises(WebhookSignatureError):
        verify_signature(SECRET, headers(sig, timestamp=NOW + 1), BODY, now=NOW)


def test_wrong_secret_is_rejected() -> None:
    other = "whsec_" + base64.b64encode(b"another key entirely, 32 bytes!!").decode()
    with pytest.raises(WebhookSignatureError, match="no valid v1 signature"):
        verify_signature(other, headers(sign(SECRET, MSG_ID, NOW, BODY)), BODY, now=NOW)


def test_stale_timestamp_is_rejected() -> None:
    sig = sign(SECRET, MSG_ID, NOW - 301, BODY)
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify_signature(SECRET, headers(sig, timestamp=NOW - 301), BODY, now=NOW)
    verify_signature(SECRET, headers(sign(SECRET, MSG_ID, NOW - 300, BODY), NOW - 300), BODY,
                     now=NOW)  # the edge of the tolerance is accepted


def test_future_timestamp_is_rejected() -> None:
    sig = sign(SECRET, MSG_ID, NOW + 301, BODY)
    with pytest.raises(WebhookSignatureError, match="future"):
        verify_signature(SECRET, headers(sig, timestamp=NOW + 301), BODY, now=NOW)


def test_tolerance_none_skips_only_the_time_check() -> None:
    old = NOW - 86_400
    verify_signature(SECRET, headers(sign(SECRET, MSG_ID, old, BODY), old), BODY,
                     tolerance_s=None, now=NOW)
    with pytest.raises(WebhookSignatureError):
        verify_signature(SECRET, headers("v1,AAAA", old), BODY, tolerance_s=None, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_rejected(missing: str) -> None:
    h = headers(sign(SECRET, MSG_ID, NOW, BODY))
    del h[missing]
    with pytest.raises(WebhookSignatureError, match=f"missing header.*{missing}"):
        verify_signature(SECRET, h, BODY, now=NOW)


def test_non_numeric_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookSignatureError, match="unix timestamp"):
        verify_signature(SECRET, {"webhook-id": MSG_ID, "webhook-timestamp": "yesterday",
                                  "webhook-signature": "v1,AAAA"}, BODY, now=NOW)


def test_multiple_signatures_one_valid() -> None:
    valid = sign(SECRET, MSG_ID, NOW, BODY)
    header = f"v1,bm90IHRoZSByaWdodCBvbmU= v2,{valid[3:]} {valid} v1a,xyz"
    verify_signature(SECRET, headers(header), BODY, now=NOW)
    with pytest.raises(WebhookSignatureError):  # the valid value under another version
        verify_signature(SECRET, headers(f"v1,bm90IHRoZSByaWdodCBvbmU= v2,{valid[3:]}"), BODY,
                         now=NOW)


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", "", "whsec_@@@"])
def test_bad_secret_format_is_rejected(secret: str) -> None:
    with pytest.raises(WebhookSignatureError, match="secret"):
        verify_signature(secret, headers("v1,AAAA"), BODY, now=NOW)


def test_secret_without_prefix_is_accepted() -> None:
    raw = base64.b64encode(KEY).decode()
    verify_signature(raw, headers(sign(SECRET, MSG_ID, NOW, BODY)), BODY, now=NOW)
