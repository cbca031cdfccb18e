"""Fixtures and checks shared by the end-to-end client tests (supabase-js and supabase-py).

The fixtures are the integration suite's (one fake-Replicate handle, a log folder, an empty
queue per test); the checks state what an existing client must observe.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import httpx
from PIL import Image

from tests.integration.conftest import status_log

__all__ = ["status_log"]

PASSWORD = "correct-horse-battery-42"
FAILURES = ("failed", "cancelled")


def collapse(statuses: Sequence[str]) -> list[str]:
    """Consecutive repeats folded (a row is updated several times in one status)."""
    out: list[str] = []
    for status in statuses:
        if not out or out[-1] != status:
            out.append(status)
    return out


def assert_realtime_sequence(statuses: Sequence[str]) -> None:
    """What a client watching UPDATEs sees: maybe queued, then exactly the worker's steps.

    Realtime sends UPDATEs only and the client subscribes after start-generation answered,
    so ``pending`` (the INSERT) is never seen and ``queued`` only if the row is touched again
    while queued. After that the worker's transitions arrive in commit order, nothing
    follows ``completed``, and a generation that succeeds never shows ``failed``.
    """
    assert not set(statuses) & set(FAILURES), statuses
    steps = collapse(statuses)
    while steps and steps[0] in ("pending", "queued"):
        steps.pop(0)
    assert steps == ["processing", "downloading", "completed"], statuses


def assert_ordered_ending_completed(statuses: Sequence[str]) -> None:
    """The weaker guarantee when the daemon may claim before the client has joined: what is
    seen follows the status order, ends with ``completed``, and never shows a failure."""
    assert not set(statuses) & set(FAILURES), statuses
    steps = collapse(statuses)
    order = ["pending", "queued", "processing", "downloading", "completed"]
    assert all(s in order for s in steps), statuses
    ranks = [order.index(s) for s in steps]
    assert ranks == sorted(ranks) and steps[-1] == "completed", statuses


def fetch_image(url: str) -> tuple[bytes, Image.Image, str]:
    """GET a public image URL; the bytes, the decoded image (fully loaded) and Content-Type."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    image = Image.open(io.BytesIO(response.content))
    image.load()  # decodes every pixel: a truncated or corrupt file raises here
    return response.content, image, response.headers.get("content-type", "")


def assert_completed_row(row: dict[str, Any], user_id: str, gid: str) -> dict[str, Any]:
    """The polled ``select('*, images(*)')`` row of a finished generation; its one image."""
    assert row["id"] == gid and row["user_id"] == user_id, row
    assert row["status"] == "completed", row
    assert row["replicate_prediction_id"], row
    assert row["generation_time_seconds"] is not None, row
    assert len(row["images"]) == 1, row["images"]
    image = dict(row["images"][0])
    assert image["generation_id"] == gid and image["user_id"] == user_id, image
    assert image["storage_path"] == f"{user_id}/{gid}.{image['format']}", image
    assert image["file_size"] and image["file_size"] > 0, image
    return image
