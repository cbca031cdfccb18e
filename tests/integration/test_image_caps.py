"""The daemon refuses images whose headers declare too many pixels, before storing anything
(issue 11 point 5): an img2img source is refused before Replicate is paid, an output before
it reaches Storage. Both fail the generation at once (a permanent error), with a clear
message."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from devstack.stack import StackState
from tests import declared_sizes
from tests.support import Fake, Picture, running_worker, service_client

pytestmark = pytest.mark.usefixtures("quiet_queue")

FLUX_DEV = "black-forest-labs/flux-dev"


def _created(fake: Fake) -> int:
    return sum(int(n) for n in fake.stats()["predictions_created"].values())


def _objects(conn: psycopg.Connection, gid: str) -> int:
    row = conn.execute(
        "select count(*) from storage.objects where bucket_id = 'generated-images'"
        " and name like %s",
        (f"%{gid}%",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_img2img_source_declaring_100000_pixels_a_side_is_refused_unpaid(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    log_dir: Path,
    admin_conn: psycopg.Connection,
) -> None:
    service = service_client(stack_state)
    bucket = f"cap-sources-{uuid.uuid4().hex[:8]}"
    service.storage.create_bucket(bucket, options={"public": True})
    bomb = declared_sizes.png(100_000, 100_000, total=4937)
    service.storage.from_(bucket).upload("bomb.png", bomb, {"content-type": "image/png"})
    source_url = service.storage.from_(bucket).get_public_url("bomb.png").rstrip("?")
    before = _created(fake)
    user = picture.create_user()
    with running_worker(stack_state, log_dir):
        gid, _job_id = picture.submit(
            user, "the same, in ink", FLUX_DEV, source_image_url=source_url, strength=0.5
        )
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "failed", gen
    assert "100000 x 100000" in gen["error_message"], gen["error_message"]
    assert "WORKER_MAX_IMAGE_SIDE" in gen["error_message"]
    jobs = picture.jobs_for(gid)
    assert [(j["job_type"], j["status"], j["attempt_number"]) for j in jobs] == [
        ("generate-image", "failed", 1)  # permanent: no retry
    ]
    assert _created(fake) == before, "no prediction may be paid for a refused source"
    assert gen["images"] == [] and _objects(admin_conn, gid) == 0


def test_an_output_over_the_configured_side_is_not_stored(
    stack_state: StackState,
    picture: Picture,
    fake: Fake,
    log_dir: Path,
    admin_conn: psycopg.Connection,
) -> None:
    fake.configure(latency_seconds=0.2)
    user = picture.create_user()
    with running_worker(stack_state, log_dir, WORKER_MAX_IMAGE_SIDE=512):
        gid, _job = picture.submit(user, "a wide valley", "black-forest-labs/flux-schnell")
        gen = picture.wait_status(gid, timeout=30)
    assert gen["status"] == "failed", gen
    assert "512-pixel limit" in gen["error_message"], gen["error_message"]
    download = [j for j in picture.jobs_for(gid) if j["job_type"] == "download-image"]
    assert [(j["status"], j["attempt_number"]) for j in download] == [("failed", 1)]
    assert gen["images"] == [] and _objects(admin_conn, gid) == 0
