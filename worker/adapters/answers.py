"""The JSON answers of the combined RPCs (claim_work, complete_and_claim, finish_prediction,
store_image, heartbeat_worker, prediction_stats) as the ports' values, and the arguments
they share. A malformed answer is a RetryableError naming the call, never a KeyError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.errors import RetryableError
from worker.jobs import Job, parse_ts
from worker.ports import Chain, Claimed, Durations, Finished, Peer, Stored, WorkerInfo


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RetryableError(f"{what} answered {type(data).__name__} instead of an object")
    return data


def _jobs(answer: Mapping[str, Any]) -> tuple[Job, ...]:
    items = answer.get("jobs") or []
    return tuple(Job.from_row(item) for item in items if isinstance(item, Mapping))


def claimed(data: Any, asked: int, what: str = "claim_work") -> Claimed:
    answer = _object(data, what)
    return Claimed(_jobs(answer), parse_ts(answer.get("next_at")), asked)


def finished(data: Any) -> Finished:
    answer = _object(data, "finish_prediction")
    download = answer.get("download_job_id")
    status = answer.get("generation_status")
    return Finished(
        jobs=_jobs(answer),
        download_job_id=str(download) if download else None,
        generation_status=str(status) if status else None,
    )


def stored(data: Any, asked: int) -> Stored:
    answer = _object(data, "store_image")
    image = answer.get("image")
    return Stored(
        jobs=_jobs(answer),
        next_at=parse_ts(answer.get("next_at")),
        asked=asked,
        image=dict(image) if isinstance(image, Mapping) else {},
        reused=bool(answer.get("reused")),
    )


def peers(data: Any) -> list[Peer]:
    out: list[Peer] = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, Mapping) or not item.get("worker_id"):
            continue
        types = item.get("job_types")
        out.append(
            Peer(
                worker_id=str(item["worker_id"]),
                mode=str(item["mode"]) if item.get("mode") else None,
                concurrency=max(1, int(item.get("concurrency") or 1)),
                in_flight=int(item.get("in_flight") or 0),
                realtime_connected=item.get("realtime_connected"),
                job_types=tuple(str(t) for t in types) if isinstance(types, list) else None,
            )
        )
    return out


def durations(data: Any) -> dict[str, Durations]:
    out: dict[str, Durations] = {}
    for model_id, stats in (data.items() if isinstance(data, Mapping) else ()):
        if not isinstance(stats, Mapping):
            continue
        try:
            out[str(model_id)] = Durations(
                n=int(stats["n"]),
                p05=float(stats["p05"]),
                p50=float(stats["p50"]),
                p95=float(stats["p95"]),
                max=float(stats["max"]),
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


def chain_params(chain: Chain | None, limit_name: str) -> dict[str, Any]:
    """The claim arguments of a combined call: claim nothing without a chain."""
    if chain is None:
        return {limit_name: 0}
    return {
        limit_name: chain.limit,
        "p_job_types": list(chain.job_types),
        "p_lease_seconds": chain.lease_seconds,
    }


def registry_params(info: WorkerInfo) -> dict[str, Any]:
    return {
        "p_worker_id": info.worker_id,
        "p_hostname": info.hostname,
        "p_version": info.version,
        "p_concurrency": info.concurrency,
        "p_in_flight": info.in_flight,
        "p_jobs_done": info.jobs_done,
        "p_jobs_failed": info.jobs_failed,
        "p_realtime_connected": info.realtime_connected,
        "p_mode": info.mode,
        "p_stopped": info.stopped,
    }
