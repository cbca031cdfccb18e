"""The ports the core (daemon, runner, handlers) depends on, and the values they carry.

Protocols: ``Queue``, ``Generations``, ``ImageStore`` (implemented over supabase-py in
``worker.adapters``, in memory in ``worker.adapters.memory``), ``ImageModel``
(``worker.replicate.client``) and ``Fetcher`` (``worker.net``). Values: ``Prediction``
(what the model port returns), ``Fetched`` (what the fetch port returns), ``WorkerInfo``,
``Peer``, and what the combined queue calls take and answer (``Chain``, ``Claimed``,
``Finished``, ``Stored``, ``Durations``). Only ``worker.wiring`` puts concrete classes
together.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from worker.errors import InvalidInput, JobCancelled, PredictionFailed, RetryableError
from worker.jobs import Job
from worker.statuses import PREDICTION_RUNNING, PREDICTION_TERMINAL, PredictionStatus

Row = Mapping[str, object]  # one database row as PostgREST returns it (JSON values)


# -- values ------
@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    hostname: str
    version: str
    mode: str
    concurrency: int
    in_flight: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    realtime_connected: bool | None = None
    stopped: bool = False
    job_types: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Peer:
    """A live worker of the registry (``heartbeat_worker``'s answer)."""

    worker_id: str
    mode: str | None = None
    concurrency: int = 1
    in_flight: int = 0
    realtime_connected: bool | None = None
    job_types: tuple[str, ...] | None = None  # None: every type

    def takes(self, job_type: str) -> bool:
        return self.job_types is None or job_type in self.job_types


@dataclass(frozen=True)
class Chain:
    """What the slot of a finishing job may claim in the same call (``complete_and_claim``,
    ``store_image``, ``finish_prediction``): up to ``limit`` jobs of ``job_types``."""

    limit: int
    job_types: tuple[str, ...]
    lease_seconds: int


@dataclass(frozen=True)
class Claimed:
    """Jobs a call claimed for the caller, and (when it found fewer than it asked for) the
    earliest future ``scheduled_at`` of its job types. ``asked`` 0: it claimed nothing."""

    jobs: tuple[Job, ...] = ()
    next_at: datetime | None = None
    asked: int = 0
    # The call was sent more than once (an answer lost): an earlier attempt may have
    # claimed jobs that this answer does not name. The daemon then releases lost claims.
    in_doubt: bool = field(default=False, kw_only=True)


@dataclass(frozen=True)
class Finished(Claimed):
    """``finish_prediction``'s answer: the download job, the generation's status after it."""

    download_job_id: str | None = None
    generation_status: str | None = None


@dataclass(frozen=True)
class Stored(Claimed):
    """``store_image``'s answer: the generation's image (``reused``: it existed already)."""

    image: Row = field(default_factory=dict)
    reused: bool = False


@dataclass(frozen=True)
class PredictionDone:
    """What ``finish_prediction`` writes for a succeeded prediction."""

    generation_id: str
    prediction_id: str
    generation_time: float | None
    download: Mapping[str, object]  # the download-image payload
    result: Mapping[str, object]  # the finishing job's result


@dataclass(frozen=True)
class Durations:
    """Recent prediction durations of one model, seconds from created to completed."""

    n: int
    p05: float
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Durations:
        """Percentiles as PostgreSQL's percentile_cont computes them (``values`` not empty)."""
        ordered = sorted(values)

        def pct(q: float) -> float:
            pos = q * (len(ordered) - 1)
            lo = int(pos)
            hi = min(lo + 1, len(ordered) - 1)
            return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

        return cls(len(ordered), pct(0.05), pct(0.5), pct(0.95), ordered[-1])


def _urls(output: object) -> list[str]:
    """Output file URLs from the shapes models use: a string, a list of strings, an
    object with ``url``, or a list of such objects."""
    items = output if isinstance(output, list) else [output]
    urls: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("url")
        if isinstance(item, str) and item.strip():
            urls.append(item.strip())
    return urls


@dataclass(frozen=True)
class Prediction:
    """A Replicate prediction (``schemas_prediction_response``: API answer or webhook body)."""

    id: str
    status: str  # a PredictionStatus, or a status this version does not know yet
    output: object = None
    error: str | None = None
    raw: Mapping[str, object] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: object) -> Prediction:
        """Parse a prediction body; ``InvalidInput`` when it is not one."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a prediction must be a JSON object")
        pid = data.get("id")
        status = data.get("status")
        if not isinstance(pid, str) or not pid or not isinstance(status, str):
            raise InvalidInput("not a prediction: id and status are required")
        error = data.get("error")
        return cls(
            id=pid,
            status=status,
            output=data.get("output"),
            error=None if error in (None, "") else str(error),
            raw={str(k): v for k, v in data.items()},
        )

    @property
    def output_urls(self) -> list[str]:
        return _urls(self.output)

    @property
    def terminal(self) -> bool:
        """succeeded, failed, canceled or aborted: the prediction will not change again."""
        return self.status in PREDICTION_TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == PredictionStatus.SUCCEEDED

    @property
    def settled(self) -> bool:
        """Terminal, or still ``starting``/``processing`` with its output files already
        present (file-output models in sync mode): nothing more to wait for."""
        return self.terminal or (self.status in PREDICTION_RUNNING and bool(self.output_urls))

    def settle(self, *, cancelled_here: bool = False) -> bool:
        """True when there is nothing more to wait for (``settled``). A prediction that
        ended without an image raises: ``failed`` -> PredictionFailed (the model's error);
        ``canceled`` -> JobCancelled when ``cancelled_here`` (the caller cancelled it),
        else PredictionFailed; ``aborted`` -> RetryableError (its Cancel-After passed
        before it started)."""
        details: dict[str, object] = {"prediction_id": self.id, "status": self.status}
        details["error"] = self.error
        if self.status == PredictionStatus.FAILED:
            raise PredictionFailed(
                f"the model failed: {self.error or 'no error message'}", details=details
            )
        if self.status == PredictionStatus.CANCELED:
            if cancelled_here:
                raise JobCancelled(f"prediction {self.id} was cancelled")
            raise PredictionFailed(f"prediction {self.id} was canceled", details=details)
        if self.status == PredictionStatus.ABORTED:
            raise RetryableError(
                f"prediction {self.id} was aborted: its deadline passed before it started",
                details=details,
            )
        return self.settled

    @property
    def predict_time(self) -> float | None:
        """Seconds the model ran: ``metrics.predict_time``, else ``metrics.total_time``."""
        metrics = self.raw.get("metrics")
        if isinstance(metrics, Mapping):
            for key in ("predict_time", "total_time"):
                value = metrics.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return float(value)
        return None


@dataclass(frozen=True)
class Fetched:
    """Checked image bytes from the fetch port."""

    data: bytes = field(repr=False)
    content_type: str  # canonical for the sniffed format, not what the server said
    format: str  # png | jpeg | webp | gif | svg
    width: int | None = None  # from the image header, when it has one
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def data_uri(self) -> str:
        """A ``data:`` URI for the bytes (the img2img source sent to the model)."""
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"


# -- ports ------
class Queue(Protocol):
    def claim(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
    ) -> list[Job]: ...

    def complete(self, job_id: str, worker_id: str, result: Mapping[str, object] | None) -> Row:
        """Fenced: ``LeaseLost`` unless the job is still processing under ``worker_id``."""
        ...

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: str,
        details: Mapping[str, object] | None,
        retryable: bool,
    ) -> Row:
        """Fenced like ``complete``; the row tells whether it went back to pending."""
        ...

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: int) -> Row | None: ...

    def release(self, job_id: str, worker_id: str) -> bool: ...

    def release_lost(self, worker_id: str, known: Sequence[str]) -> list[str]:
        """Release (pending, attempt given back) the jobs processing under ``worker_id``
        that are not in ``known``: claims whose answer was lost. Their ids."""
        ...

    def read(self, job_id: str) -> Row | None:
        """The job's row (None: no such job)."""
        ...

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, object],
        *,
        priority: int = 0,
        max_attempts: int = 3,
        dedupe_key: str | None = None,
    ) -> str: ...

    def requeue_stale(self) -> int: ...

    def enqueue_webhook_checks(self, older_than_seconds: int, limit: int) -> int: ...

    def next_scheduled_at(self, job_types: Sequence[str]) -> datetime | None: ...

    def register_worker(self, info: WorkerInfo) -> None: ...

    # -- combined calls (one transaction each; see 20261205000100_fewer_round_trips.sql) ----
    def claim_work(
        self,
        limit: int,
        job_types: Sequence[str],
        worker_id: str,
        lease_seconds: int,
        *,
        exclude_suspects: bool = False,
        suspect_alone: bool = False,
    ) -> Claimed:
        """``claim``, with a generate-image job's generation marked processing and handed
        over with it (``Job.generation``), and ``next_at`` when fewer jobs were due. With
        ``suspect_alone`` (an idle worker) a suspect first in line comes alone, and the
        other jobs come without suspects."""
        ...

    def complete_and_claim(
        self, job_id: str, worker_id: str, result: Mapping[str, object], chain: Chain | None
    ) -> Claimed:
        """``complete`` (fenced, ``LeaseLost``), then claim for ``chain``."""
        ...

    def finish_prediction(
        self, job_id: str, worker_id: str, done: PredictionDone, chain: Chain | None
    ) -> Finished:
        """The generation downloading, its download job enqueued (claimed for the caller
        when ``chain`` takes download-image jobs), the job completed (fenced)."""
        ...

    def store_image(
        self,
        job_id: str,
        worker_id: str,
        image: Mapping[str, object],
        result: Mapping[str, object],
        chain: Chain | None,
    ) -> Stored:
        """The images row (``GenerationClosed`` for a given-up generation: nothing is
        written), which completes the generation; the job completed (fenced); then claim
        for ``chain``."""
        ...

    def heartbeat_worker(self, info: WorkerInfo, live_seconds: int) -> list[Peer]:
        """``register_worker`` answering the live workers (this one included)."""
        ...

    def prediction_stats(self, hours: int) -> dict[str, Durations]:
        """Recent prediction durations per model_id."""
        ...


class Catalogue(Protocol):
    def catalogue_model(self, model_id: str, model_version: str | None) -> Row:
        """The active ``models`` row of ``model_id`` (a replicate_id) when ``model_version``
        is None or its own version (``catalogue_model`` in SQL); else ``InvalidInput``
        naming model_id or model_version. Asked before paying for a prediction."""
        ...


class Generations(Catalogue, Protocol):
    def get(self, generation_id: str) -> Row | None: ...

    def update(
        self,
        generation_id: str,
        fields: Mapping[str, object],
        *,
        unless_status: Collection[str] = (),
    ) -> Row | None:
        """The row after the update, or None when it does not exist or its status is one
        of ``unless_status``."""
        ...

    def find_by_prediction(self, prediction_id: str) -> Row | None: ...

    def find_image(self, generation_id: str) -> Row | None: ...

    def insert_image(self, row: Mapping[str, object]) -> Row:
        """Idempotent: a generation's existing image is returned instead of a second."""
        ...

    def existing_ids(self, generation_ids: Sequence[str]) -> dict[str, str]:
        """generation id -> status, for the ids that exist."""
        ...


class ImageStore(Protocol):
    def upload(self, path: str, data: bytes, content_type: str) -> None: ...

    def public_url(self, path: str) -> str: ...

    def remove(self, paths: Sequence[str]) -> None: ...

    def list_paths(self, limit: int) -> list[str]: ...


class ImageModel(Protocol):
    def create_prediction(
        self,
        model_id: str,
        version: str | None,
        input: Mapping[str, object],
        *,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        cancel_after: float | None = None,
        wait: bool = True,
    ) -> Prediction: ...

    def get_prediction(self, prediction_id: str) -> Prediction: ...

    def cancel_prediction(self, prediction_id: str) -> Prediction: ...

    def wait_for(
        self,
        prediction: Prediction,
        deadline: float,
        poll_interval: float = ...,
        should_stop: Callable[[], bool] = ...,
        schedule: Callable[[Prediction], float] | None = ...,
    ) -> Prediction:
        """Poll until settled (every ``poll_interval``, or after ``schedule(last seen)``
        seconds); ``DeadlineExceeded`` past ``deadline`` (monotonic), ``JobCancelled`` when
        ``should_stop()``; a failed prediction raises."""
        ...


class Fetcher(Protocol):
    def fetch(self, url: str, *, expect: set[str] | None = None) -> Fetched: ...
