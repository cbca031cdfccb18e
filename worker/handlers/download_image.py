"""download-image: fetch the provider's output safely, store it, record it, complete.

Idempotent: the object path is deterministic and uploaded with upsert, and an existing
``images`` row for the generation is reused, so a retry never duplicates either.

A generation given up while its image downloads (cancelled, marked failed or deleted by its
user) gets nothing stored: the status is read again before the upload, and the database
refuses the ``images`` row of such a generation (PT410, ``GenerationClosed``), upon which the
uploaded object is removed. Storing the ``images`` row completes the generation in the same
transaction, so a later cancel finds it completed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.context import JobContext, required
from worker.errors import GenerationClosed, MissingGeneration
from worker.ports import Fetched
from worker.replicate.inputs import content_type, output_format
from worker.statuses import GENERATION_TERMINAL, GenerationStatus

KNOWN_FORMATS = ("webp", "png", "jpeg", "svg")
GIVEN_UP = (GenerationStatus.CANCELLED, GenerationStatus.FAILED)


def handle(ctx: JobContext) -> Mapping[str, Any]:
    payload = ctx.job.payload
    gid = required(payload, "generation_id")
    output_url = required(payload, "output_url")
    gens = ctx.services.generations
    gen = gens.get(gid)
    if gen is None:
        raise MissingGeneration(f"generation {gid} does not exist")
    if gen["status"] in GIVEN_UP:
        ctx.log("job.skipped", "generation was %s; nothing to download", gen["status"])
        return {"skipped": f"generation {gen['status']}"}

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
    now = gens.get(gid)
    if now is None or now["status"] in GIVEN_UP:
        gone = "deleted" if now is None else now["status"]
        ctx.log("job.skipped", "generation was %s while downloading; nothing stored", gone)
        return {"skipped": f"generation {gone}"}
    store = ctx.services.store
    store.upload(path, fetched.data, content_type(fmt))
    public_url = store.public_url(path)
    try:
        image = gens.insert_image(_image_row(gid, gen, payload, fetched, path, public_url))
    except GenerationClosed as exc:
        store.remove([path])
        ctx.log("image.discarded", "%s; the uploaded object was removed", exc.message)
        return {"skipped": "generation given up", "removed": path}
    _complete(ctx, gid)
    ctx.log(
        "image.stored", "stored %s (%d bytes)", path, len(fetched.data), bytes=len(fetched.data)
    )
    return {"image_id": image.get("id"), "storage_path": path, "bytes": len(fetched.data)}


def _image_row(
    gid: str,
    gen: Mapping[str, Any],
    payload: Mapping[str, Any],
    fetched: Fetched,
    path: str,
    public_url: str,
) -> dict[str, Any]:
    return {
        "generation_id": gid,
        "user_id": gen.get("user_id"),
        "filename": path.rsplit("/", 1)[-1],
        "storage_path": path,
        "public_url": public_url,
        "file_size": len(fetched.data),
        "width": fetched.width or payload.get("width") or gen.get("width"),
        "height": fetched.height or payload.get("height") or gen.get("height"),
        "format": path.rsplit(".", 1)[-1],
        "prompt": gen.get("prompt"),
        "negative_prompt": gen.get("negative_prompt"),
        "model": gen.get("model"),
    }


def _complete(ctx: JobContext, gid: str) -> None:
    # Never over a given-up generation: the database refuses it too.
    ctx.services.generations.update(
        gid,
        {
            "status": GenerationStatus.COMPLETED,
            "completed_at": datetime.now(UTC).isoformat(),
            "error_message": None,
        },
        unless_status=GENERATION_TERMINAL,
    )
