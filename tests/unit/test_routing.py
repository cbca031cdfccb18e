"""No wake-up herd (worker.routing): of the live workers, one claims a new job at once and
one backs it up a little later; the others let it be."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from worker.ports import Peer
from worker.routing import BACKUP_DELAY, WakeRouter

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TYPES = ("generate-image", "download-image")


def row(job_id: str | None = None, **fields: object) -> dict[str, object]:
    return {"id": job_id or str(uuid.uuid4()), "job_type": "generate-image",
            "status": "pending", "scheduled_at": NOW.isoformat(), **fields}


def fleet(n: int) -> dict[str, WakeRouter]:
    peers = [Peer(f"w{i}", realtime_connected=True) for i in range(n)]
    routers = {p.worker_id: WakeRouter(p.worker_id, TYPES) for p in peers}
    for router in routers.values():
        router.update(peers)
    return routers


def test_a_lone_worker_claims_every_job_at_once() -> None:
    router = WakeRouter("me", TYPES)
    assert router.delay_for(row(), NOW) == 0.0


def test_of_eight_idle_workers_one_claims_and_one_backs_up() -> None:
    routers = fleet(8)
    firsts: Counter[str] = Counter()
    for _ in range(800):
        job = row()
        delays = {w: r.delay_for(job, NOW) for w, r in routers.items()}
        assert sorted(d for d in delays.values() if d is not None) == [0.0, BACKUP_DELAY]
        firsts[next(w for w, d in delays.items() if d == 0.0)] += 1
    assert set(firsts) == set(routers) and min(firsts.values()) > 50  # spread over all


def test_nobody_wakes_for_a_job_inserted_claimed_or_of_a_type_it_does_not_take() -> None:
    router = WakeRouter("me", ("download-image",))
    assert router.delay_for(row(status="processing"), NOW) is None
    assert router.delay_for(row(), NOW) is None  # generate-image: not this worker's type
    assert router.delay_for(row(job_type="download-image"), NOW) == 0.0


def test_workers_without_realtime_or_without_the_type_are_not_ranked() -> None:
    router = WakeRouter("me", TYPES)
    router.update([
        Peer("deaf", realtime_connected=False),
        Peer("downloads-only", realtime_connected=True, job_types=("download-image",)),
        Peer("me", realtime_connected=True),
    ])
    assert all(router.delay_for(row(), NOW) == 0.0 for _ in range(50))


def test_a_job_due_later_is_claimed_when_it_is_due() -> None:
    router = WakeRouter("me", TYPES)
    later = row(scheduled_at=(NOW + timedelta(seconds=3)).isoformat())
    assert router.delay_for(later, NOW) == 3.0


def test_the_backup_claims_after_its_delay() -> None:
    routers = fleet(2)
    job = row()
    delays = sorted(d for r in routers.values() if (d := r.delay_for(job, NOW)) is not None)
    assert delays == [0.0, BACKUP_DELAY]
