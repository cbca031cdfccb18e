"""The seed's client flow in supabase-py against the local stack and the worker daemon.

What a Python app does: the sync client (``create_client``) signs up, invokes
``start-generation`` and polls ``select('*, images(*)')``; the async client
(``acreate_client``, Realtime being async-only in supabase-py) signs in as the same user and
watches UPDATEs of the generation filtered by id; the finished image is downloaded from its
public URL and decoded with Pillow. Also the img2img variant: a source PNG in a public bucket,
passed as ``source_image_url`` with ``strength`` to a model family that supports it.

As in test_seed_client_js.py, the daemon starts once the subscription is live, so every
transition the worker makes is one the client can see.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image
from realtime import RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from supabase import Client, acreate_client, create_client

from devstack.stack import StackState
from tests.e2e.conftest import (
    FAILURES,
    PASSWORD,
    assert_completed_row,
    assert_realtime_sequence,
    fetch_image,
)
from tests.support import Fake, WorkerProcess, service_client

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("quiet_queue")]

FLOW_TIMEOUT_S = 60.0
POLL_S = 0.5
SCHNELL = "black-forest-labs/flux-schnell"
FLUX_DEV = "black-forest-labs/flux-dev"


@dataclass
class Observed:
    generation_id: str
    subscribe_states: list[str] = field(default_factory=list)
    realtime_statuses: list[str] = field(default_factory=list)
    callback_errors: list[str] = field(default_factory=list)
    poll_statuses: list[str] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


class PyApp:
    """The app's sync client, signed up as a fresh user."""

    def __init__(self, state: StackState) -> None:
        self.state = state
        self.client: Client = create_client(state.url, state.keys.anon_key)
        self.email = f"seed-py-{uuid.uuid4().hex[:12]}@example.test"
        res = self.client.auth.sign_up({"email": self.email, "password": PASSWORD})
        assert res.user is not None and res.session is not None, "sign-up returned no session"
        self.user_id = str(res.user.id)

    def start_generation(self, body: dict[str, Any]) -> dict[str, Any]:
        data = self.client.functions.invoke(
            "start-generation", {"body": body, "responseType": "json"}
        )
        assert isinstance(data, dict), data
        return data

    def poll(self, gid: str) -> dict[str, Any]:
        res = (
            self.client.table("image_generations")
            .select("*, images(*)")
            .eq("id", gid)
            .single()
            .execute()
        )
        assert isinstance(res.data, dict), res.data
        return dict(res.data)


async def follow(app: PyApp, gid: str, worker: WorkerProcess) -> Observed:
    """Subscribe to the generation's UPDATEs, start the daemon, poll until it completes.

    Returns once the polled row is completed with its image and Realtime delivered the
    completion; raises on a failure status or after FLOW_TIMEOUT_S.
    """
    seen = Observed(gid)
    realtime = await acreate_client(app.state.url, app.state.keys.anon_key)
    await realtime.auth.sign_in_with_password({"email": app.email, "password": PASSWORD})
    subscribed = asyncio.Event()

    # Callbacks run synchronously inside the Realtime listen task and must never raise.
    def on_update(payload: Any) -> None:
        try:
            seen.realtime_statuses.append(str(payload["data"]["record"]["status"]))
        except Exception as exc:  # a raise would silently kill the listen task
            seen.callback_errors.append(repr(exc))

    def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
        seen.subscribe_states.append(f"{state.value}: {error}" if error else str(state.value))
        if state == RealtimeSubscribeStates.SUBSCRIBED:
            subscribed.set()

    channel = realtime.channel(f"generation-{gid}")
    channel.on_postgres_changes(
        RealtimePostgresChangesListenEvent.Update,
        on_update,
        table="image_generations",
        schema="public",
        filter=f"id=eq.{gid}",
    )
    try:
        await channel.subscribe(on_state)
        await asyncio.wait_for(subscribed.wait(), 10)
        await asyncio.to_thread(lambda: worker.start().wait_ready())
        deadline = time.monotonic() + FLOW_TIMEOUT_S
        while True:
            row = await asyncio.to_thread(app.poll, gid)
            seen.row = row
            if not seen.poll_statuses or seen.poll_statuses[-1] != row["status"]:
                seen.poll_statuses.append(str(row["status"]))
            failure = {row["status"], *seen.realtime_statuses} & set(FAILURES)
            assert not failure, f"generation ended {failure}: {row.get('error_message')}"
            if (
                row["status"] == "completed"
                and row["images"]
                and "completed" in seen.realtime_statuses
            ):
                return seen
            assert time.monotonic() < deadline, (
                f"timed out after {FLOW_TIMEOUT_S}s: Realtime {seen.realtime_statuses}, "
                f"polling {seen.poll_statuses}"
            )
            await asyncio.sleep(POLL_S)
    finally:
        await realtime.remove_channel(channel)
        await realtime.realtime.close()


def run_flow(
    state: StackState, log_dir: Path, body: dict[str, Any]
) -> tuple[PyApp, dict[str, Any], Observed, WorkerProcess]:
    app = PyApp(state)
    started = app.start_generation(body)
    assert started["success"] is True and started["status"] == "queued", started
    assert started["job_id"] and started["generation_id"], started
    worker = WorkerProcess(state, log_dir)
    try:
        seen = asyncio.run(follow(app, str(started["generation_id"]), worker))
    finally:
        worker.stop()
    return app, started, seen, worker


def assert_observed(app: PyApp, seen: Observed, worker: WorkerProcess) -> dict[str, Any]:
    assert seen.subscribe_states[0] == "SUBSCRIBED", seen.subscribe_states
    assert not seen.callback_errors, seen.callback_errors
    assert_realtime_sequence(seen.realtime_statuses)
    assert seen.poll_statuses[-1] == "completed", seen.poll_statuses
    image_row = assert_completed_row(seen.row, app.user_id, seen.generation_id)
    public_url = app.client.storage.from_("generated-images").get_public_url(
        image_row["storage_path"]
    )
    assert public_url.rstrip("?") == image_row["public_url"], (public_url, image_row)
    body, image, content_type = fetch_image(public_url)
    assert len(body) == image_row["file_size"], (len(body), image_row)
    assert image.format is not None and image.format.lower() == image_row["format"], image.format
    assert content_type == f"image/{image_row['format']}", content_type
    assert image.width > 0 and image.height > 0
    done = [
        e for e in worker.actions("job.completed") if e.get("generation_id") == seen.generation_id
    ]
    assert sorted(e["job_type"] for e in done) == ["download-image", "generate-image"], done
    return image_row


def test_supabase_py_client_sees_every_status_and_a_decodable_image(
    stack_state: StackState, fake: Fake, log_dir: Path
) -> None:
    fake.configure(latency_seconds=0.5)
    body = {
        "prompt": "a lighthouse at dawn, python client",
        "model_id": SCHNELL,
        "width": 1024,
        "height": 1024,
    }
    app, _started, seen, worker = run_flow(stack_state, log_dir, body)
    image_row = assert_observed(app, seen, worker)
    assert image_row["format"] == "webp"
    assert seen.row["model"] == "FLUX Schnell" and seen.row["prompt"] == body["prompt"]


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def test_supabase_py_img2img_sends_the_source_image_to_the_model(
    stack_state: StackState, fake: Fake, log_dir: Path, admin_conn: psycopg.Connection
) -> None:
    fake.configure(latency_seconds=0.3)
    service = service_client(stack_state)
    bucket = f"e2e-sources-{uuid.uuid4().hex[:8]}"
    service.storage.create_bucket(bucket, options={"public": True})
    source = small_png()
    service.storage.from_(bucket).upload("source.png", source, {"content-type": "image/png"})
    source_url = service.storage.from_(bucket).get_public_url("source.png").rstrip("?")
    assert httpx.get(source_url, timeout=10).content == source  # publicly readable

    body = {
        "prompt": "the same scene in watercolour",
        "model_id": FLUX_DEV,
        "width": 1024,
        "height": 1024,
        "source_image_url": source_url,
        "strength": 0.6,
    }
    app, started, seen, worker = run_flow(stack_state, log_dir, body)
    assert_observed(app, seen, worker)

    # The job carried the request; the model got the source bytes as its `image` input.
    job = admin_conn.execute(
        "select payload from public.job_queue where id = %s", (started["job_id"],)
    ).fetchone()
    assert job is not None
    assert job[0]["source_image_url"] == source_url and job[0]["strength"] == 0.6, job[0]
    prediction = httpx.get(
        f"{stack_state.replicate_url}/predictions/{seen.row['replicate_prediction_id']}",
        headers={"Authorization": f"Bearer {stack_state.env()['REPLICATE_API_TOKEN']}"},
        timeout=10,
    )
    assert prediction.status_code == 200, prediction.text
    sent = prediction.json()
    assert sent["model"] == FLUX_DEV, sent["model"]
    image_input = sent["input"]["image"]
    prefix = "data:image/png;base64,"
    assert image_input.startswith(prefix), image_input[:60]
    assert base64.b64decode(image_input[len(prefix) :]) == source
    assert sent["input"]["prompt_strength"] == pytest.approx(0.4)  # the original's 1 - strength
    ignored = fake.stats()["ignored_inputs"]
    assert not [k for k in ignored if k.startswith(FLUX_DEV)], ignored  # flux-dev reads them
