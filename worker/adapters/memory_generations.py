"""In-memory ``image_generations`` / ``images`` (the generations port) and the image store,
beside ``worker.adapters.memory`` (the queue). Rows come back as PostgREST returns them:
timestamps as ISO strings."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime

from worker.errors import InvalidInput, PermanentError
from worker.ports import Row
from worker.statuses import GenerationStatus

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


class MemoryGenerations:
    """``image_generations`` and ``images``, and the ``models`` catalogue they name
    (``catalogue``: active replicate_id -> version; None: no catalogue, nothing checked)."""

    def __init__(
        self, clock: Clock = utc_now, catalogue: Mapping[str, str | None] | None = None
    ) -> None:
        self.clock = clock
        self.catalogue = dict(catalogue) if catalogue is not None else None
        self.lock = threading.RLock()
        self.rows: dict[str, dict[str, object]] = {}
        self.images: dict[str, dict[str, object]] = {}  # by generation id (unique there)
        # get, update, find_by_prediction, find_image calls in order (the queue's combined
        # calls that write generations are counted by the queue)
        self.calls: list[str] = []

    # -- what the app does (not a port method) ------
    def add(self, **fields: object) -> str:
        """Insert a generation the way a client does; returns its id."""
        now = self.clock()
        gid = str(fields.pop("id", None) or uuid.uuid4())
        row: dict[str, object] = {
            "id": gid,
            "user_id": None,
            "prompt": "",
            "status": GenerationStatus.PENDING,
            "replicate_prediction_id": None,
            "error_message": None,
            "job_id": None,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
        }
        row.update(fields)
        with self.lock:
            self.rows[gid] = row
        return gid

    # -- the port ------
    def get(self, generation_id: str) -> Row | None:
        with self.lock:
            self.calls.append("get")
            row = self.rows.get(generation_id)
            return None if row is None else export(row)

    def update(
        self,
        generation_id: str,
        fields: Mapping[str, object],
        *,
        unless_status: Collection[str] = (),
    ) -> Row | None:
        with self.lock:
            self.calls.append("update")
            row = self.rows.get(generation_id)
            if row is None or row["status"] in unless_status:
                return None
            row.update(fields)
            row["updated_at"] = self.clock()
            return export(row)

    def find_by_prediction(self, prediction_id: str) -> Row | None:
        with self.lock:
            self.calls.append("find_by_prediction")
            for row in self.rows.values():
                if row.get("replicate_prediction_id") == prediction_id:
                    return export(row)
        return None

    def find_image(self, generation_id: str) -> Row | None:
        with self.lock:
            self.calls.append("find_image")
            image = self.images.get(generation_id)
            return None if image is None else export(image)

    def insert_image(self, row: Mapping[str, object]) -> Row:
        gid = str(row["generation_id"])
        with self.lock:
            if gid not in self.rows:
                raise PermanentError(f"insert image failed: no generation {gid} (code 23503)")
            existing = self.images.get(gid)
            if existing is not None:  # the unique index: a retry gets the first image
                return export(existing)
            image = {"id": str(uuid.uuid4()), "created_at": self.clock(), **row}
            self.images[gid] = image
            return export(image)

    def catalogue_model(self, model_id: str, model_version: str | None) -> Row:
        """``catalogue_model()`` of 20261201000200: an active model, the catalogue's version;
        ``InvalidInput`` naming the field otherwise (the SQL's 22023)."""
        model_id = (model_id or "").strip()
        version = (model_version or "").strip() or None
        if self.catalogue is None:
            return {"replicate_id": model_id, "version": version, "is_active": True}
        if not model_id:
            raise InvalidInput(
                "the model catalogue refused the job: model_id is required: a replicate_id "
                "of the model catalogue"
            )
        if model_id not in self.catalogue:
            raise InvalidInput(
                f"the model catalogue refused the job: Unknown model: {model_id} (model_id "
                "must be an active model of the catalogue)"
            )
        known = self.catalogue[model_id]
        if version is not None and version != known:
            raise InvalidInput(
                f"the model catalogue refused the job: model_version {version} is not the "
                f"catalogue's version for model_id {model_id}"
            )
        return {"replicate_id": model_id, "version": known, "is_active": True}

    def existing_ids(self, generation_ids: Sequence[str]) -> dict[str, str]:
        with self.lock:
            return {
                gid: str(self.rows[gid]["status"]) for gid in generation_ids if gid in self.rows
            }

    # -- what the queue's SQL functions do to generations ------
    def set_if(
        self, generation_id: object, fields: Mapping[str, object], when: Callable[[str], bool]
    ) -> None:
        row = self.rows.get(str(generation_id))
        if row is not None and when(str(row["status"])):
            row.update(fields)
            row["updated_at"] = self.clock()


def export(row: Mapping[str, object]) -> dict[str, object]:
    return {k: iso(v) for k, v in row.items()}


class MemoryImageStore:
    """The ``generated-images`` bucket: objects by path, upserted."""

    def __init__(
        self, base_url: str = "http://storage.test", bucket: str = "generated-images"
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def upload(self, path: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.objects[path] = (data, content_type)

    def public_url(self, path: str) -> str:
        return f"{self.base_url}/storage/v1/object/public/{self.bucket}/{path}"

    def remove(self, paths: Sequence[str]) -> None:
        with self._lock:
            for path in paths:
                self.objects.pop(path, None)

    def list_paths(self, limit: int) -> list[str]:
        """Objects one folder deep (``<user>/<file>``), as the Storage adapter lists them."""
        with self._lock:
            return sorted(p for p in self.objects if p.count("/") == 1)[: max(limit, 0)]
