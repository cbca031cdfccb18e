"""cleanup-storage: remove stored images whose generation was deleted or failed.

Objects live at ``{user_id}/{generation_id}.{format}``; the generation id in the file name
tells which row the object belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from worker.context import JobContext
from worker.statuses import GenerationStatus

_NAME = re.compile(r"^[^/]+/(?P<gid>[0-9a-fA-F-]{36})\.[a-z]+$")


def handle(ctx: JobContext) -> Mapping[str, Any]:
    limit = int(ctx.job.payload.get("limit") or 1000)
    store = ctx.services.store
    paths = store.list_paths(limit)
    by_generation: dict[str, list[str]] = {}
    for path in paths:
        match = _NAME.match(path)
        if match:
            by_generation.setdefault(match["gid"].lower(), []).append(path)
    statuses = ctx.services.generations.existing_ids(sorted(by_generation))
    doomed = [
        path
        for gid, group in by_generation.items()
        if statuses.get(gid) in (None, GenerationStatus.FAILED)
        for path in group
    ]
    ctx.check()
    store.remove(doomed)
    ctx.log(
        "storage.cleaned", "removed %d of %d objects", len(doomed), len(paths), removed=len(doomed)
    )
    return {"scanned": len(paths), "removed": len(doomed)}
