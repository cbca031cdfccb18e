"""JSON bodies and object downloads."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from devstack.storage import errors

CHUNK = 256 * 1024


def iso(value: dt.datetime | None) -> str | None:
    """Timestamps like storage-api's: UTC ISO-8601 with milliseconds and a ``Z``."""
    if value is None:
        return None
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_response(data: Any, status_code: int = 200) -> Response:
    body = json.dumps(data, default=_default, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


def object_row(row: dict[str, Any]) -> dict[str, Any]:
    """A storage.objects row as the API returns it (no generated path_tokens)."""
    return {k: v for k, v in row.items() if k != "path_tokens"}


def _download_headers(request: Request, name: str, row: dict[str, Any]) -> dict[str, str]:
    meta = row.get("metadata") or {}
    headers = {
        "content-type": str(meta.get("mimetype") or "application/octet-stream"),
        "cache-control": str(meta.get("cacheControl") or "no-cache"),
        "accept-ranges": "none",
    }
    if meta.get("eTag"):
        headers["etag"] = str(meta["eTag"])
    updated = row.get("updated_at")
    if isinstance(updated, dt.datetime):
        headers["last-modified"] = format_datetime(updated.astimezone(dt.UTC), usegmt=True)
    if "download" in request.query_params:
        filename = request.query_params["download"] or name.rsplit("/", 1)[-1]
        headers["content-disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    return headers


async def serve_object(request: Request, path: Path, name: str, row: dict[str, Any]) -> Response:
    """Stream an object's bytes with its stored Content-Type, Cache-Control and ETag.

    The file is opened before anything is sent; a concurrent overwrite (an atomic rename)
    does not affect the already open file, so the body is always one whole version.
    """
    headers = _download_headers(request, name, row)
    etag = headers.get("etag")
    if etag and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    try:
        fh = await anyio.to_thread.run_sync(open, path, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise errors.no_such_key() from None
    headers["content-length"] = str(os.fstat(fh.fileno()).st_size)
    if request.method == "HEAD":
        fh.close()
        return Response(status_code=200, headers=headers)

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK):
                yield chunk
        finally:
            fh.close()

    return StreamingResponse(body(), status_code=200, headers=headers)
