"""One contract, two implementations: every test here runs against the in-memory ports
(``worker.adapters.memory``, marked ``fast``) and against the real adapters over the
session stack (supabase-py, PostgREST, the SQL of supabase/migrations). A behaviour the
double gets wrong fails here, next to the real one.

A ``Backend`` is the ports plus the few things a test must do behind their back, the way
the world does (a worker dies and its lease runs out, a user cancels, time passes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
import pytest

from devstack.stack import StackState
from tests.support import Picture
from worker import wiring
from worker.adapters.memory import MemoryDatabase
from worker.adapters.rest import SupabaseGenerations, SupabaseQueue
from worker.adapters.storage import SupabaseImageStore
from worker.ports import Generations, ImageStore, Queue

# The active models the contract's generate-image jobs name: seeded by the migrations on the
# stack (20261129000700_seed_models.sql), given to the in-memory queue as its catalogue.
FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
CATALOGUE: dict[str, str | None] = {FLUX: None, SDXL: SDXL_VERSION}


def gen(**payload: Any) -> dict[str, Any]:
    """A generate-image payload naming a catalogue model."""
    return {"model_id": FLUX, **payload}


class Backend(Protocol):
    name: str
    queue: Queue
    generations: Generations
    store: ImageStore

    def job(self, job_id: str) -> dict[str, Any]: ...

    def expire_lease(self, job_id: str) -> None: ...

    def make_due(self, job_id: str, seconds_ago: float = 0.0) -> None: ...

    def add_generation(self, **fields: Any) -> str: ...

    def cancel_generation(self, generation_id: str) -> None: ...


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.db = MemoryDatabase(catalogue=CATALOGUE)
        self.queue = self.db.queue
        self.generations = self.db.generations
        self.store = self.db.store

    def job(self, job_id: str) -> dict[str, Any]:
        return self.db.queue.row(job_id)

    def expire_lease(self, job_id: str) -> None:
        self.db.queue.expire_lease(job_id)

    def make_due(self, job_id: str, seconds_ago: float = 0.0) -> None:
        from datetime import timedelta

        with self.db.queue.lock:
            job = self.db.queue.jobs[job_id]
            job.scheduled_at = self.db.clock() - timedelta(seconds=seconds_ago)

    def add_generation(self, **fields: Any) -> str:
        fields.setdefault("user_id", str(uuid.uuid4()))
        return self.db.generations.add(prompt="a contract", **fields)

    def cancel_generation(self, generation_id: str) -> None:
        self.db.queue.cancel_generation(generation_id)


class StackBackend:
    name = "supabase"

    def __init__(self, state: StackState, admin: psycopg.Connection, picture: Picture) -> None:
        client = wiring.supabase_client(state.url, state.keys.service_role_key)
        self.queue = SupabaseQueue(client)
        self.generations = SupabaseGenerations(client)
        self.store = SupabaseImageStore(client, "generated-images")
        self._client = client
        self._admin = admin
        self._picture = picture
        self._user: str | None = None

    def job(self, job_id: str) -> dict[str, Any]:
        rows = self._client.table("job_queue").select("*").eq("id", job_id).execute().data
        return dict(rows[0])

    def expire_lease(self, job_id: str) -> None:
        self._admin.execute(
            "update public.job_queue set locked_until = now() - interval '1 second'"
            " where id = %s",
            (job_id,),
        )

    def make_due(self, job_id: str, seconds_ago: float = 0.0) -> None:
        self._admin.execute(
            "update public.job_queue set scheduled_at = now() - make_interval(secs => %s)"
            " where id = %s",
            (seconds_ago, job_id),
        )

    def add_generation(self, **fields: Any) -> str:
        if self._user is None:
            self._user = self._picture.create_user()
        model = self._client.table("models").select("*").eq("is_active", True).limit(1)
        row = model.execute().data[0]
        values = {
            "user_id": self._user,
            "prompt": "a contract",
            "model": row["name"],
            "width": row.get("default_width") or 1024,
            "height": row.get("default_height") or 1024,
            **fields,
        }
        data = self._client.table("image_generations").insert(values).execute().data
        return str(data[0]["id"])

    def cancel_generation(self, generation_id: str) -> None:
        self._client.rpc("cancel_generation", {"p_generation_id": generation_id}).execute()


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.fast), "supabase"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    state = request.getfixturevalue("stack_state")
    admin = request.getfixturevalue("admin_conn")
    request.getfixturevalue("quiet_queue")  # claims must see this test's jobs only
    yield StackBackend(state, admin, Picture(state))


@pytest.fixture
def worker_id() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"
