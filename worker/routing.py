"""Who claims a job a Realtime INSERT announced: no wake-up herd.

Every worker subscribed to INSERTs on job_queue sees every new job. If each one claimed on
every event, N idle workers would make N claims per job, N - 1 of them empty. Instead each
worker ranks the live workers that could take the job (the registry's answer to its last
``heartbeat_worker``: Realtime connected, the job's type among theirs) by rendezvous hashing
of (job id, worker id), the same ranking on every worker without talking:

- the first claims at once (or when the job becomes due);
- the second claims ``BACKUP_DELAY`` later, in case the first is busy, gone or missed the
  event (its claim comes back empty when the first took the job: at most one empty claim
  per job);
- the others do nothing; polling still guarantees progress.

A job inserted already claimed (the download a finishing generate job chains to itself) or
not pending wakes nobody; the Realtime subscription also filters on status = pending. An
event without a row (too large for Realtime) wakes this worker as before.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from worker.jobs import parse_ts
from worker.ports import Peer
from worker.statuses import JobStatus

BACKUP_DELAY = 0.25  # s


def score(job_id: str, worker_id: str) -> int:
    digest = hashlib.blake2b(f"{job_id}|{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class WakeRouter:
    """The live workers as last heard, and this worker's place for a new job."""

    def __init__(
        self, worker_id: str, job_types: Sequence[str], backup_delay: float = BACKUP_DELAY
    ) -> None:
        self.worker_id = worker_id
        self.job_types = tuple(job_types)
        self.backup_delay = backup_delay
        self._peers: tuple[Peer, ...] = ()
        self._lock = threading.Lock()

    def update(self, peers: Sequence[Peer]) -> None:
        with self._lock:
            self._peers = tuple(peers)

    @property
    def peers(self) -> tuple[Peer, ...]:
        with self._lock:
            return self._peers

    def rank(self, job_id: str, job_type: str) -> int:
        """0: this worker claims first; 1: the backup; more: someone else's job."""
        candidates = {
            p.worker_id
            for p in self.peers
            if p.realtime_connected and p.takes(job_type) and p.worker_id != self.worker_id
        }
        candidates.add(self.worker_id)
        ranked = sorted(candidates, key=lambda w: score(job_id, w), reverse=True)
        return ranked.index(self.worker_id)

    def delay_for(self, row: Mapping[str, Any], now: datetime) -> float | None:
        """Seconds until this worker should claim for the job in ``row`` (an INSERT's
        record), or None when it is not this worker's to claim."""
        if row.get("status") != JobStatus.PENDING:
            return None
        job_type = str(row.get("job_type") or "")
        job_id = str(row.get("id") or "")
        if job_type not in self.job_types or not job_id:
            return None
        due = _due_in(row.get("scheduled_at"), now)
        rank = self.rank(job_id, job_type)
        if rank == 0:
            return due
        if rank == 1:
            return due + self.backup_delay
        return None


def _due_in(value: object, now: datetime) -> float:
    try:
        when = parse_ts(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    return max(0.0, (when - now).total_seconds()) if when is not None else 0.0
