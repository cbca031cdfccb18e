"""What "no job lost, nothing duplicated" means, checked in the database and at the fake."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.support import WorkerProcess, wait_until

TERMINAL = ("completed", "failed", "cancelled")
LIVE_JOB = ("pending", "processing")


@dataclass
class Facts:
    """One generation as the database sees it."""

    status: str
    error_message: str | None
    prediction_id: str | None
    images: int
    objects: list[str]
    jobs: list[tuple[str, str, int, int]] = field(default_factory=list)  # type, status, attempt, max

    def jobs_of(self, job_type: str) -> list[tuple[str, str, int, int]]:
        return [j for j in self.jobs if j[0] == job_type]


def facts(conn: psycopg.Connection, gids: Sequence[str]) -> dict[str, Facts]:
    out: dict[str, Facts] = {}
    rows = conn.execute(
        "select g.id::text, g.status, g.error_message, g.replicate_prediction_id,"
        " (select count(*) from public.images i where i.generation_id = g.id)"
        " from public.image_generations g where g.id = any(%s::uuid[])",
        (list(gids),),
    ).fetchall()
    for gid, status, error, prediction, images in rows:
        out[gid] = Facts(status, error, prediction, int(images), [])
    for name, in conn.execute(
        "select name from storage.objects where bucket_id = 'generated-images'"
        " and split_part(split_part(name, '/', 2), '.', 1) = any(%s)",
        (list(gids),),
    ).fetchall():
        gid = name.split("/", 1)[1].split(".", 1)[0]
        out[gid].objects.append(name)
    for gid, job_type, status, attempt, max_attempts in conn.execute(
        "select payload->>'generation_id', job_type, status, attempt_number, max_attempts"
        " from public.job_queue where payload->>'generation_id' = any(%s) order by created_at",
        (list(gids),),
    ).fetchall():
        out[gid].jobs.append((job_type, status, attempt, max_attempts))
    return out


def wait_terminal(conn: psycopg.Connection, gids: Sequence[str], timeout: float) -> None:
    """Every generation terminal and none of their jobs still pending or processing."""

    def settled() -> bool | str:
        rows = facts(conn, gids)
        open_gens = [g for g, f in rows.items() if f.status not in TERMINAL]
        live = [g for g, f in rows.items() if any(j[1] in LIVE_JOB for j in f.jobs)]
        return not open_gens and not live

    try:
        wait_until(settled, timeout, interval=0.25, message="every generation terminal")
    except AssertionError:
        rows = facts(conn, gids)
        stuck = {g: (f.status, f.jobs) for g, f in rows.items()
                 if f.status not in TERMINAL or any(j[1] in LIVE_JOB for j in f.jobs)}
        raise AssertionError(f"not settled after {timeout}s: {stuck}") from None


def assert_completed_once(rows: dict[str, Facts], gids: Iterable[str]) -> None:
    """Completed, one images row, one stored object, one generate-image job, nothing live."""
    problems: dict[str, Any] = {}
    for gid in gids:
        f = rows[gid]
        generate = f.jobs_of("generate-image")
        if (
            f.status != "completed"
            or f.images != 1
            or len(f.objects) != 1
            or len(generate) != 1
            or generate[0][1] != "completed"
            or any(j[1] in LIVE_JOB for j in f.jobs)
            or not any(j[0] == "download-image" and j[1] == "completed" for j in f.jobs)
        ):
            problems[gid] = f
    assert not problems, f"{len(problems)} generation(s) not completed exactly once: {problems}"


def predictions_by_prompt(replicate_url: str, marker: str) -> Counter[str]:
    """How many predictions the fake holds per prompt containing ``marker`` (newest 100)."""
    response = httpx.get(
        f"{replicate_url}/predictions",
        headers={"Authorization": "Bearer r8_fault_suite_listing"},
        timeout=10,
    )
    response.raise_for_status()
    prompts = [
        str(p.get("input", {}).get("prompt", ""))
        for p in response.json()["results"]
    ]
    return Counter(p for p in prompts if marker in p)


def job_events(workers: Iterable[WorkerProcess], action: str) -> list[dict[str, Any]]:
    return [e for w in workers for e in w.actions(action)]
