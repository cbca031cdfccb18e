"""The benchmarks are not part of the test run (``make bench``); this keeps their code from
rotting: time to image, calls per generation, throughput and resources end to end at tiny
size on one stack of their own with real workers, their charts, and the pure parts (the
statistics, the proxy's classification of calls, the overhead's decomposition)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import run_all
from bench.calls import group
from bench.common import Result, Sizes, Table, percentile, summary
from bench.scenario import REALTIME, ModeRun
from bench.supaproxy import classify
from bench.time_to_image import UNIFORM, per_generation, unavailable

PNG = b"\x89PNG\r\n\x1a\n"


def test_percentiles_and_tables() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 95) == 3.0
    assert math.isnan(percentile([], 50))
    s = summary([0.2, 0.1, 0.4, 0.3])
    assert (s["n"], s["median"], s["max"]) == (4, pytest.approx(0.25), 0.4)
    table = Table("t", ["name", "ms"])
    table.add("a", 1234.5)
    table.add("b", float("nan"))
    with pytest.raises(ValueError):
        table.add("too", "many", "cells")
    assert "1,234" in table.text() and "| b | - |" in table.markdown()


@pytest.mark.parametrize(("method", "path", "status", "body", "kind", "jobs"), [
    ("POST", "/rest/v1/rpc/claim_jobs", 200, b"[]", "rpc claim_jobs (empty)", 0),
    ("POST", "/rest/v1/rpc/claim_jobs", 200, b'[{"id": 1}, {"id": 2}]',
     "rpc claim_jobs (jobs)", 2),
    ("POST", "/rest/v1/rpc/claim_next_job", 200, b"[]", "rpc claim_next_job (empty)", 0),
    ("POST", "/rest/v1/rpc/complete_job", 200, b"[]", "rpc complete_job", 0),
    ("POST", "/rest/v1/rpc/claim_work", 200, b'{"jobs": [], "next_at": null}',
     "rpc claim_work (empty)", 0),
    ("POST", "/rest/v1/rpc/claim_work", 200, b'{"jobs": [{"id": 1}], "next_at": null}',
     "rpc claim_work (jobs)", 1),
    ("POST", "/rest/v1/rpc/complete_and_claim", 200, b'{"jobs": [], "completed": [1]}',
     "rpc complete_and_claim", 0),
    ("POST", "/rest/v1/rpc/finish_prediction", 200, b'{"jobs": [{"id": 2}]}',
     "rpc finish_prediction", 1),
    ("GET", "/rest/v1/image_generations", 200, b"[]", "image_generations read", 0),
    ("PATCH", "/rest/v1/image_generations", 200, b"[]", "image_generations update", 0),
    ("POST", "/rest/v1/images", 201, b"[]", "images insert", 0),
    ("POST", "/storage/v1/object/generated-images/u/g.webp", 200, b"{}",
     "storage POST object", 0),
    ("POST", "/auth/v1/token", 200, b"{}", "auth POST", 0),
])
def test_the_proxy_classifies_calls(method: str, path: str, status: int, body: bytes,
                                    kind: str, jobs: int) -> None:
    assert classify(method, path, {}, status, body) == (kind, jobs)


def test_upserts_and_groups() -> None:
    assert classify("POST", "/rest/v1/job_workers", {"prefer": "resolution=merge-duplicates"},
                    201, b"")[0] == "job_workers upsert"
    assert [group(k) for k in ("rpc heartbeat_job", "rpc register_worker",
                               "rpc heartbeat_worker", "storage POST object",
                               "rpc claim_jobs (empty)")] == [
        "heartbeats", "heartbeats", "heartbeats", "storage", "generation"]


def test_overhead_parts_add_up_to_the_time_to_image() -> None:
    """created 0 -> claimed 0.05 -> prediction 0.07..1.37 -> download enqueued 1.9 ->
    claimed 1.95 -> completed 2.1: overhead 2.1 - 1.3 = 0.8, in five parts."""
    run = ModeRun(REALTIME, ["g"], [
        {"generation_id": "g", "job_type": "generate-image", "created": 100.01,
         "started": 100.05},
        {"generation_id": "g", "job_type": "download-image", "created": 101.9,
         "started": 101.95},
    ], [{"id": "g", "status": "completed", "replicate_prediction_id": "p", "total": 2.1,
         "created": 100.0, "completed": 102.1}], {}, 3.0, 0,
        predictions=[{"id": "p", "created_at": "1970-01-01T00:01:40.070000Z",
                      "completed_at": "1970-01-01T00:01:41.370000Z"}])
    [g] = per_generation(run)
    assert g["provider"] == pytest.approx(1.3)
    assert g["overhead"] == pytest.approx(0.8)
    parts = [g[k] for k in ("pickup", "to_create", "seen", "dl_pickup", "dl_run")]
    assert parts == pytest.approx([0.05, 0.02, 0.53, 0.05, 0.15])
    assert sum(parts) + g["provider"] == pytest.approx(g["total"])


def _json(out: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((out / f"{name}.json").read_text()))


def _check_time_to_image(result: Result, sizes: Sizes) -> None:
    by_mode = {r["mode"]: r for r in result.data["results"]}
    reason = unavailable(UNIFORM)
    if reason is not None:  # the hook: runs once the worker reads its poll interval
        assert "WORKER_REPLICATE_POLL_INTERVAL" in by_mode["poll-0.5"]["skipped"]
    for key in ("polling", "webhook", "seed") + (() if reason else ("poll-0.5",)):
        r = by_mode[key]
        assert r["integrity"]["ok"], (key, r["integrity"])
        assert r["measured"] == sizes.ttl_generations, key
        latency = r["fake_latency_s"]
        provider = r["provider_s"]
        assert 0.75 * latency <= provider["min"] < provider["max"] <= 1.25 * latency + 0.1, key
        assert 0 < r["overhead_s"]["median"] < (5.0 if key != "seed" else 10.0), key
        assert r["provider_requests"]["creates_per_generation"] == 1.0, key
        assert len(r["overheads_unscaled_s"]) == sizes.ttl_generations
    seed = by_mode["seed"]
    assert seed["overhead_unscaled_s"]["median"] == pytest.approx(
        60 * seed["overhead_s"]["median"])
    assert by_mode["webhook"]["provider_requests"]["webhooks_per_prediction"] >= 1
    assert by_mode["polling"]["provider_requests"]["webhooks_per_prediction"] == 0


def _check_calls(result: Result, sizes: Sizes) -> None:
    setups = result.data["setups"]
    assert [s["workers"] for s in setups] == [1, sizes.calls_idle_workers]
    for s in setups:
        assert s["integrity"]["ok"], s["integrity"]
        assert s["realtime_connections"] == s["workers"]  # the WebSocket went through
        kinds = {k["kind"]: k for k in s["kinds"]}
        # Each job completes inside a combined call: the generate job with the prediction's
        # end (finish_prediction), the download with the image (store_image).
        assert kinds["rpc finish_prediction"]["per_generation_raw"] == 1.0
        assert kinds["rpc store_image"]["per_generation_raw"] == 1.0
        assert "rpc complete_job" not in kinds
        assert kinds["storage POST object"]["per_generation_raw"] == 1.0
        claims = [k for name, k in kinds.items() if name.endswith("(jobs)")]
        assert claims and sum(k["load"] for k in claims) <= s["jobs"]
        assert s["jobs_claimed_in_load_window"] == s["jobs"]
        assert s["totals"]["generation"]["raw"] >= 5.0
        assert s["totals"]["storage"]["raw"] == 1.0


def _check_throughput(result: Result, sizes: Sizes) -> None:
    rows = result.data["summary"]
    assert [r["workers"] for r in rows] == list(sizes.throughput_workers)
    assert rows[0]["scaling_efficiency"] == pytest.approx(1.0)
    assert all(r["all_ok"] and r["generate_jobs_per_s_steady"] > 0 for r in rows)
    for run in result.data["runs"]:
        cpu = run["cpu_s"]
        assert cpu["worker 1"] > 0 and cpu["Postgres (all backends)"] > 0
        assert cpu["stack server (REST, Realtime, Storage, fake Replicate)"] > 0
        assert run["machine_busy_cpu_s"] >= sum(v for k, v in cpu.items() if k != "other "
                                                "(rest of the machine)") - 0.05


def _check_resources(result: Result, sizes: Sizes, out: Path) -> None:
    data = result.data
    assert data["integrity"]["ok"], data["integrity"]
    assert data["integrity"]["completed"] == sizes.resource_jobs // 2
    assert 0 < data["cpu_ms_per_job"] < 1000
    samples = data["samples"]
    assert samples[-1]["jobs"] == sizes.resource_jobs
    assert all(s["rss_mib"] > 10 for s in samples)
    assert data["rss_end_mib"] == samples[-1]["rss_mib"]
    doc = _json(out, "resources")
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["postgres"].startswith("PostgreSQL")
    assert len(doc["machine"]["load_average_at_start"]) == 3


@pytest.mark.slow
def test_benchmarks_run_at_tiny_size_and_draw_their_charts(tmp_path: Path) -> None:
    sizes = Sizes.tiny()
    names = ["time_to_image", "calls", "throughput", "resources"]
    results = run_all(names, sizes, tmp_path, echo=lambda _line: None)
    assert sorted(results) == sorted(names)
    _check_time_to_image(results["time_to_image"], sizes)
    _check_calls(results["calls"], sizes)
    _check_throughput(results["throughput"], sizes)
    _check_resources(results["resources"], sizes, tmp_path)
    charts = ["time_to_image-cdf", "time_to_image-vs-latency", "calls-per-generation",
              "throughput-workers", "resources-rss"]
    for chart in charts:
        data = (tmp_path / f"{chart}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, chart
    report = (tmp_path / "report.md").read_text()
    assert "## Worker resources" in report and "## Time to image" in report
    assert all(f"({chart}.png)" in report for chart in charts)
    for name in names:
        assert _json(tmp_path, name)["tables"][0]["rows"], name
