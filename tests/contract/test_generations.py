"""The generations port (image_generations and images) and the image store."""

from __future__ import annotations

import uuid

import pytest

from tests.contract.conftest import FLUX, SDXL, SDXL_VERSION, Backend
from worker.errors import InvalidInput
from worker.statuses import GENERATION_TERMINAL, GenerationStatus

NO_SUCH = "00000000-0000-4000-8000-000000000000"


def test_get_and_update_unless_status(backend: Backend) -> None:
    gens = backend.generations
    gid = backend.add_generation(status=GenerationStatus.QUEUED)
    row = gens.get(gid)
    assert row is not None and row["status"] == GenerationStatus.QUEUED
    updated = gens.update(
        gid, {"status": GenerationStatus.PROCESSING}, unless_status=GENERATION_TERMINAL
    )
    assert updated is not None and updated["status"] == GenerationStatus.PROCESSING
    gens.update(gid, {"status": GenerationStatus.CANCELLED})
    refused = gens.update(
        gid, {"status": GenerationStatus.DOWNLOADING}, unless_status=GENERATION_TERMINAL
    )
    assert refused is None
    after = gens.get(gid)
    assert after is not None and after["status"] == GenerationStatus.CANCELLED
    assert gens.get(NO_SUCH) is None
    assert gens.get("not-a-uuid") is None
    assert gens.update(NO_SUCH, {"error_message": "x"}) is None


def test_find_by_prediction(backend: Backend) -> None:
    gid = backend.add_generation(status=GenerationStatus.PROCESSING)
    pid = f"pred-{uuid.uuid4().hex[:10]}"
    backend.generations.update(gid, {"replicate_prediction_id": pid})
    found = backend.generations.find_by_prediction(pid)
    assert found is not None and found["id"] == gid
    assert backend.generations.find_by_prediction("pred-nobody") is None


def test_an_image_is_written_once_per_generation(backend: Backend) -> None:
    gens = backend.generations
    gid = backend.add_generation(status=GenerationStatus.DOWNLOADING)
    assert gens.find_image(gid) is None
    row = {
        "generation_id": gid,
        "user_id": (gens.get(gid) or {})["user_id"],
        "filename": f"{gid}.webp",
        "storage_path": f"u/{gid}.webp",
        "public_url": f"http://x/{gid}.webp",
        "format": "webp",
    }
    first = gens.insert_image(row)
    again = gens.insert_image({**row, "filename": "second.webp"})  # a retry
    assert again["id"] == first["id"] and again["filename"] == f"{gid}.webp"
    found = gens.find_image(gid)
    assert found is not None and found["id"] == first["id"]


def test_existing_ids_names_the_generations_that_exist(backend: Backend) -> None:
    a = backend.add_generation(status=GenerationStatus.FAILED)
    b = backend.add_generation(status=GenerationStatus.COMPLETED)
    found = backend.generations.existing_ids([a, b, NO_SUCH])
    assert found == {a: GenerationStatus.FAILED, b: GenerationStatus.COMPLETED}
    assert backend.generations.existing_ids([]) == {}


def test_the_image_store_upserts_lists_and_removes(backend: Backend) -> None:
    store = backend.store
    path = f"{uuid.uuid4()}/{uuid.uuid4()}.png"
    store.upload(path, b"\x89PNG first", "image/png")
    store.upload(path, b"\x89PNG second", "image/png")  # a retry overwrites
    assert path in store.list_paths(10_000)
    assert store.public_url(path).endswith(f"/storage/v1/object/public/generated-images/{path}")
    store.remove([path])
    assert path not in store.list_paths(10_000)
    store.remove([])


# -- the catalogue the worker asks before paying ------
def test_catalogue_model_answers_the_active_row_and_its_version(backend: Backend) -> None:
    gens = backend.generations
    flux = gens.catalogue_model(FLUX, None)
    assert flux["replicate_id"] == FLUX and flux["version"] is None
    sdxl = gens.catalogue_model(SDXL, None)
    assert sdxl["version"] == SDXL_VERSION  # the payload had none: the catalogue's
    assert gens.catalogue_model(SDXL, SDXL_VERSION)["version"] == SDXL_VERSION
    assert gens.catalogue_model(SDXL, "")["version"] == SDXL_VERSION


@pytest.mark.parametrize(
    ("model_id", "version", "named"),
    [
        ("attacker/model", None, "Unknown model: attacker/model"),
        (SDXL, "f" * 64, "model_version"),
        (FLUX, SDXL_VERSION, "model_version"),
        ("", None, "model_id is required"),
    ],
)
def test_catalogue_model_refuses_what_the_catalogue_does_not_hold(
    backend: Backend, model_id: str, version: str | None, named: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        backend.generations.catalogue_model(model_id, version)
    assert named in refused.value.message
    assert not refused.value.retryable
