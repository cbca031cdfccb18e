"""ImageStore over Supabase Storage (supabase-py sync client, service_role)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage3.exceptions import StorageApiError
from supabase import Client

from worker.adapters._errors import by_status, call
from worker.errors import PermanentError, RetryableError

CACHE_SECONDS = "31536000"  # paths are deterministic per generation; overwrites are rare
REMOVE_CHUNK = 100  # paths per remove request (Storage takes at most 1,000 prefixes)


def _storage_error(exc: StorageApiError, what: str) -> Exception:
    """storage3 puts the real status in ``status``: the body's ``statusCode`` (a string;
    Storage answers HTTP 400 for most errors), or the HTTP status for a body it cannot
    parse (the gateway's 502/503/504/429). Classified like every Supabase answer."""
    raw = str(getattr(exc, "status", "") or "")
    status = int(raw) if raw.isdigit() else None
    message = f"{exc.message} (storage status {raw or '?'})"
    by_http = by_status(status, what, message)
    if by_http is not None:
        return by_http
    if status is not None and status >= 500:
        return RetryableError(f"{what}: {message}")
    return PermanentError(f"{what}: {message}")


class SupabaseImageStore:
    def __init__(self, client: Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def _api(self) -> Any:
        return self._client.storage.from_(self._bucket)

    def upload(self, path: str, data: bytes, content_type: str) -> None:
        def run() -> None:
            try:
                self._api().upload(
                    path,
                    data,
                    {
                        "content-type": content_type,
                        "upsert": "true",
                        "cache-control": CACHE_SECONDS,
                    },
                )
            except StorageApiError as exc:
                raise _storage_error(exc, f"upload {self._bucket}/{path}") from exc

        call("storage upload", run)

    def public_url(self, path: str) -> str:
        return str(self._api().get_public_url(path))

    def remove(self, paths: Sequence[str]) -> None:
        for start in range(0, len(paths), REMOVE_CHUNK):
            chunk = list(paths[start : start + REMOVE_CHUNK])

            def run(chunk: list[str] = chunk) -> None:
                try:
                    self._api().remove(chunk)
                except StorageApiError as exc:
                    raise _storage_error(exc, f"remove from {self._bucket}") from exc

            call("storage remove", run)

    def list_paths(self, limit: int) -> list[str]:
        """Object paths ``<user>/<file>`` in the bucket, up to ``limit`` of them."""

        def listing(prefix: str) -> list[dict[str, Any]]:
            try:
                result = self._api().list(prefix, {"limit": limit, "offset": 0})
            except StorageApiError as exc:
                raise _storage_error(exc, f"list {self._bucket}/{prefix}") from exc
            return [r for r in result if isinstance(r, dict)]

        paths: list[str] = []
        for folder in call("storage list", lambda: listing("")):
            if folder.get("id") is not None:  # a file at the root: not ours
                continue
            name = str(folder.get("name", ""))
            for entry in call("storage list", lambda n=name: listing(n)):  # type: ignore[misc]
                if entry.get("id") is not None:
                    paths.append(f"{name}/{entry['name']}")
                if len(paths) >= limit:
                    return paths
        return paths
