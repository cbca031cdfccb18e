"""The benchmarks are not part of the test run (``make bench``); this keeps their code from
rotting: the resources benchmark end to end at tiny size (its own stack, a real worker),
plus the statistics and table helpers every benchmark reports with."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.__main__ import run_all
from bench.common import Sizes, Table, percentile, summary


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


@pytest.mark.slow
def test_resources_benchmark_runs_at_tiny_size(tmp_path: Path) -> None:
    sizes = Sizes.tiny()
    results = run_all(["resources"], sizes, tmp_path, echo=lambda _line: None)
    result = results["resources"]
    data = result.data
    assert data["integrity"]["ok"], data["integrity"]
    assert data["integrity"]["completed"] == sizes.resource_jobs // 2
    assert 0 < data["cpu_ms_per_job"] < 1000
    samples = data["samples"]
    assert samples[-1]["jobs"] == sizes.resource_jobs
    assert all(s["rss_mib"] > 10 for s in samples)
    doc = json.loads((tmp_path / "resources.json").read_text())
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["postgres"].startswith("PostgreSQL")
    assert len(doc["machine"]["load_average_at_start"]) == 3
    assert doc["tables"][0]["rows"], doc["tables"]
    assert "## Worker resources" in (tmp_path / "report.md").read_text()
