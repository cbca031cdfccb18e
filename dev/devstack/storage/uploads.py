"""Reading an upload body into a spool file: multipart (storage3, supabase-js Blobs) or raw.

* multipart/form-data: the first file part, whatever its field name (supabase-js sends
  ``name=""``, storage3 ``name="file"``); its part Content-Type is the MIME type; fields
  ``cacheControl`` and ``metadata`` (JSON) are optional.
* anything else: the body is the file, the request Content-Type its MIME type, headers
  ``cache-control`` and ``x-metadata`` (base64 JSON) optional.

Size limits are enforced while reading; an oversized body is drained (up to a cap) so the
client reads the JSON error instead of a reset connection.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from devstack.storage import errors
from devstack.storage.disk import ObjectStore, Spool

CHUNK = 1 << 20
MULTIPART_OVERHEAD = 1 << 20  # form fields and part headers around the file itself
DRAIN_CAP = 256 << 20  # past this an oversized body is cut off instead of read


@dataclass
class Incoming:
    spool: Spool
    mimetype: str
    cache_control: str
    user_metadata: dict[str, Any] | None


class _TooLarge(Exception):
    pass


def cache_control_value(raw: str | None) -> str:
    """storage-api stores ``max-age=<n>`` for a bare number and ``no-cache`` by default."""
    if raw is None or not raw.strip():
        return "no-cache"
    raw = raw.strip()
    return f"max-age={raw}" if raw.isdigit() else raw


def _metadata_from_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise errors.invalid_request("Invalid metadata: not JSON") from exc
    if not isinstance(value, dict):
        raise errors.invalid_request("Invalid metadata: must be a JSON object")
    return value


def _metadata_header(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise errors.invalid_request("Invalid x-metadata header: not base64 JSON") from exc
    return _metadata_from_json(text)


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _drain(request: Request, already: int = 0) -> None:
    total = already
    async for chunk in request.stream():
        total += len(chunk)
        if total > DRAIN_CAP:
            return


async def receive(request: Request, store: ObjectStore, limit: int) -> Incoming:
    content_type = request.headers.get("content-type", "")
    declared = _declared_length(request)
    if content_type.lower().startswith("multipart/form-data"):
        if declared is not None and declared > limit + MULTIPART_OVERHEAD:
            await _drain(request)
            raise errors.entity_too_large()
        return await _receive_multipart(request, store, limit)
    if declared is not None and declared > limit:
        await _drain(request)
        raise errors.entity_too_large()
    return await _receive_raw(request, store, limit, content_type)


async def _receive_raw(
    request: Request, store: ObjectStore, limit: int, content_type: str
) -> Incoming:
    user_metadata = _metadata_header(request.headers.get("x-metadata"))
    spool = store.spool()
    too_large = False
    drained = 0
    try:
        async for chunk in request.stream():
            if too_large:
                drained += len(chunk)
                if drained > DRAIN_CAP:
                    break
                continue
            if spool.size + len(chunk) > limit:
                too_large = True
                continue
            spool.write(chunk)
        spool.close()
    except BaseException:
        spool.discard()
        raise
    if too_large:
        spool.discard()
        raise errors.entity_too_large()
    return Incoming(
        spool=spool,
        mimetype=content_type or "application/octet-stream",
        cache_control=cache_control_value(request.headers.get("cache-control")),
        user_metadata=user_metadata,
    )


def _copy_upload(upload: UploadFile, spool: Spool, limit: int) -> None:
    upload.file.seek(0)
    while chunk := upload.file.read(CHUNK):
        if spool.size + len(chunk) > limit:
            raise _TooLarge
        spool.write(chunk)
    spool.close()


class _CappedBody:
    """The request body, raising :class:`_TooLarge` once it passes ``cap`` bytes (bounds what
    the form parser spools for a chunked body without Content-Length)."""

    def __init__(self, request: Request, cap: int) -> None:
        self._receive = request.receive
        self.cap = cap
        self.total = 0
        self.done = False

    async def _next(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        else:  # http.disconnect
            self.done = True
        return message

    async def receive(self) -> Message:
        message = await self._next()
        if self.total > self.cap:
            raise _TooLarge
        return message

    async def drain(self) -> None:
        while not self.done and self.total <= DRAIN_CAP:
            await self._next()


async def _receive_multipart(request: Request, store: ObjectStore, limit: int) -> Incoming:
    body = _CappedBody(request, limit + MULTIPART_OVERHEAD)
    try:
        return await _parse_multipart(Request(request.scope, body.receive), store, limit)
    except _TooLarge:
        await body.drain()
        raise errors.entity_too_large() from None


async def _parse_multipart(request: Request, store: ObjectStore, limit: int) -> Incoming:
    try:
        async with request.form(max_files=8, max_fields=32) as form:
            upload = next((v for _k, v in form.multi_items() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise errors.invalid_request("No content provided: no file part in the form")
            cache_field = form.get("cacheControl")
            cache_raw = cache_field if isinstance(cache_field, str) else None
            meta_raw = form.get("metadata")
            user_metadata = _metadata_from_json(meta_raw) if isinstance(meta_raw, str) else None
            spool = store.spool()
            try:
                await anyio.to_thread.run_sync(_copy_upload, upload, spool, limit)
            except BaseException:
                spool.discard()
                raise
            return Incoming(
                spool=spool,
                mimetype=upload.content_type or "application/octet-stream",
                cache_control=cache_control_value(cache_raw),
                user_metadata=user_metadata,
            )
    except HTTPException as exc:  # malformed multipart body
        raise errors.invalid_request(str(exc.detail)) from exc


def check_mime_type(allowed: list[str] | None, mimetype: str) -> None:
    """A bucket's ``allowed_mime_types``: exact types or ``type/*`` wildcards."""
    if not allowed:
        return
    base = mimetype.split(";", 1)[0].strip().lower()
    for pattern in (a.strip().lower() for a in allowed):
        if pattern in (base, "*/*") or (pattern.endswith("/*") and base.startswith(pattern[:-1])):
            return
    raise errors.invalid_mime_type(mimetype)
