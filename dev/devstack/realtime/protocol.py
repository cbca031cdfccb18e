"""Phoenix channel framing, in the two serializer versions the Supabase clients speak.

    vsn=1.0.0 (supabase-py)  {"event", "payload", "ref", "topic", "join_ref"} objects.
                             Every server frame carries a "ref" key (null for pushes):
                             realtime-py drops frames that fail its pydantic models.
    vsn=2.0.0 (supabase-js)  [join_ref, ref, topic, event, payload] arrays, plus one binary
                             frame kind for user broadcasts (decoded here, answered in JSON).

Outgoing frames are built by splicing an already-serialised payload into the envelope, so a
change event is serialised once and only its envelope differs per channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

V1 = "1.0.0"
V2 = "2.0.0"
VERSIONS = frozenset({V1, V2})

# Binary frame kinds of realtime-js's serializer (lib/serializer.ts).
_KIND_USER_BROADCAST_PUSH = 3
_JSON_ENCODING = 1


class ProtocolError(ValueError):
    """A frame that is not a Phoenix message."""


@dataclass(frozen=True)
class Message:
    topic: str
    event: str
    payload: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    join_ref: str | None = None


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("ref must be a string")


def _message(topic: Any, event: Any, payload: Any, ref: Any, join_ref: Any) -> Message:
    if not isinstance(topic, str) or not isinstance(event, str):
        raise ProtocolError("topic and event must be strings")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError("payload must be an object")
    return Message(topic, event, payload, _ref(ref), _ref(join_ref))


def decode_text(text: str, vsn: str) -> Message:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from exc
    if vsn == V2:
        if not isinstance(data, list) or len(data) != 5:
            raise ProtocolError("a 2.0.0 frame is [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = data
        return _message(topic, event, payload, ref, join_ref)
    if not isinstance(data, dict):
        raise ProtocolError("a 1.0.0 frame is a JSON object")
    return _message(
        data.get("topic"), data.get("event"), data.get("payload"), data.get("ref"),
        data.get("join_ref"),
    )


def decode_binary(data: bytes) -> Message:
    """realtime-js's binary user broadcast push:

    kind(1)=3, len(join_ref), len(ref), len(topic), len(event), len(metadata), encoding,
    then those strings (UTF-8) and the user payload (JSON when encoding=1).
    """
    if len(data) < 7 or data[0] != _KIND_USER_BROADCAST_PUSH:
        raise ProtocolError("unsupported binary frame")
    lengths = data[1:6]
    encoding = data[6]
    offset = 7
    parts: list[str] = []
    try:
        for length in lengths:
            parts.append(data[offset : offset + length].decode())
            offset += length
        if offset > len(data):
            raise ProtocolError("truncated binary frame")
        join_ref, ref, topic, user_event, metadata = parts
        body = data[offset:]
        user_payload: Any = json.loads(body) if encoding == _JSON_ENCODING else {}
        meta = json.loads(metadata) if metadata else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"invalid binary frame: {exc}") from exc
    payload: dict[str, Any] = {"type": "broadcast", "event": user_event, "payload": user_payload}
    if isinstance(meta, dict) and meta:
        payload["meta"] = meta
    return Message(topic, "broadcast", payload, ref or None, join_ref or None)


def encode_raw(
    vsn: str,
    topic: str,
    event: str,
    payload_json: str,
    ref: str | None = None,
    join_ref: str | None = None,
) -> str:
    """A frame around an already-serialised payload."""
    dumps = json.dumps
    if vsn == V2:
        return f"[{dumps(join_ref)},{dumps(ref)},{dumps(topic)},{dumps(event)},{payload_json}]"
    return (
        f'{{"event":{dumps(event)},"payload":{payload_json},"ref":{dumps(ref)},'
        f'"topic":{dumps(topic)},"join_ref":{dumps(join_ref)}}}'
    )


def encode(vsn: str, msg: Message) -> str:
    return encode_raw(
        vsn, msg.topic, msg.event, json.dumps(msg.payload, separators=(",", ":")), msg.ref,
        msg.join_ref,
    )


def reply(vsn: str, msg: Message, status: str, response: dict[str, Any]) -> str:
    """phx_reply to ``msg``: same topic, ref and join_ref."""
    return encode(
        vsn,
        Message(msg.topic, "phx_reply", {"status": status, "response": response}, msg.ref,
                msg.join_ref),
    )
