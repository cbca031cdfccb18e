"""download-image: fetch the provider's output safely, store it, record it, complete.

Idempotent: the object path is deterministic and uploaded with upsert, and an existing
``images`` row for the generation is reused, so a retry never duplicates either.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.context import JobContext, required
from worker.errors import MissingGeneration
from worker.replicate.inputs import content_type, output_format
from worker.statuses import GENERATION_TERMINAL, GenerationStatus

KNOWN_FORMATS = ("webp", "png", "jpeg", "svg")


def handle(ctx: JobContext) -> Mapping[str, Any]:
    payload = ctx.job.payload
    gid = required(payload, "generation_id")
    output_url = required(payload, "output_url")
    gens = ctx.services.generations
    gen = gens.get(gid)
    if gen is None:
        raise MissingGeneration(f"generation {gid} does not exist")
    if gen["status"] == GenerationStatus.CANCELLED:
        ctx.log("job.skipped", "generation was cancelled; nothing to download")
        return {"skipped": "generation cancelled"}

    if gen["status"] != GenerationStatus.DOWNLOADING:
        gens.update(
            gid, {"status": GenerationStatus.DOWNLOADING}, unless_status=GENERATION_TERMINAL
        )
    existing = gens.find_image(gid)
    if existing is not None:
        _complete(ctx, gid)
        ctx.log("image.reused", "image %s already stored", existing.get("id"))
        return {"image_id": existing.get("id"), "reused": True}

    fmt = str(
        payload.get("format") or output_format(str(payload.get("model_id") or ""), output_url)
    )
    if fmt not in KNOWN_FORMATS:
        fmt = "webp"
    ctx.check()
    fetched = ctx.services.fetch_outputs.fetch(output_url, expect={fmt})
    fmt = fetched.format if fetched.format in KNOWN_FORMATS else fmt
    user_id = str(gen.get("user_id") or payload.get("user_id") or "anonymous")
    path = f"{user_id}/{gid}.{fmt}"
    ctx.check()
    store = ctx.services.store
    store.upload(path, fetched.data, content_type(fmt))
    public_url = store.public_url(path)
    image = gens.insert_image(
        {
            "generation_id": gid,
            "user_id": gen.get("user_id"),
            "filename": path.rsplit("/", 1)[-1],
            "storage_path": path,
            "public_url": public_url,
            "file_size": len(fetched.data),
            "width": fetched.width or payload.get("width") or gen.get("width"),
            "height": fetched.height or payload.get("height") or gen.get("height"),
            "format": fmt,
            "prompt": gen.get("prompt"),
            "negative_prompt": gen.get("negative_prompt"),
            "model": gen.get("model"),
        }
    )
    _complete(ctx, gid)
    ctx.log(
        "image.stored", "stored %s (%d bytes)", path, len(fetched.data), bytes=len(fetched.data)
    )
    return {"image_id": image.get("id"), "storage_path": path, "bytes": len(fetched.data)}


def _complete(ctx: JobContext, gid: str) -> None:
    ctx.services.generations.update(
        gid,
        {
            "status": GenerationStatus.COMPLETED,
            "completed_at": datetime.now(UTC).isoformat(),
            "error_message": None,
        },
        # a generation marked failed meanwhile is completed all the same: its image exists
        unless_status=(GenerationStatus.CANCELLED, GenerationStatus.COMPLETED),
    )
