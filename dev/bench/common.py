"""What every benchmark shares: statistics, tables, results and the machine they ran on.

A benchmark module exposes ``NAME``, ``TITLE`` and ``run(env, sizes) -> Result``. A ``Result``
holds one or more ``Table``s (printed as text, and as Markdown for docs/benchmarks.md) and
a JSON-able ``data`` dict; ``write_json`` stores it with the run's machine information.
The stack (Postgres + Supabase-compatible server + fake Replicate) lives in
``bench.harness``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository

Cell = str | int | float | None


# -- statistics ------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, median, p95, p99, mean, min and max of a sample (NaN when empty)."""
    if not values:
        nan = math.nan
        return {"n": 0, "median": nan, "p95": nan, "p99": nan, "mean": nan, "min": nan,
                "max": nan}
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def ratio(numerator: float, denominator: float) -> float:
    if denominator == 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def fmt(value: Cell, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` significant decimals, NaN as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits - 1}f}"
    return str(value)


def ms(seconds: float) -> float:
    return seconds * 1000.0


# -- tables and results ------
@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def _cells(self) -> list[list[str]]:
        return [[fmt(c) for c in row] for row in self.rows]

    def text(self) -> str:
        cells = self._cells()
        widths = [len(c) for c in self.columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(items: Iterable[str]) -> str:
            parts = []
            for i, (item, width) in enumerate(zip(items, widths, strict=True)):
                parts.append(item.ljust(width) if i == 0 else item.rjust(width))
            return "  ".join(parts).rstrip()

        out = [self.title, "=" * len(self.title), line(self.columns),
               line("-" * w for w in widths)]
        out += [line(row) for row in cells]
        out += [f"  * {note}" for note in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
               "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns)))
               + "|"]
        out += ["| " + " | ".join(row) + " |" for row in self._cells()]
        if self.notes:
            out.append("")
            out += [f"- {note}" for note in self.notes]
        return "\n".join(out)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows,
                "notes": self.notes}


@dataclass
class Result:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def text(self) -> str:
        return "\n\n".join(t.text() for t in self.tables)

    def markdown(self) -> str:
        return "\n\n".join(t.markdown() for t in self.tables)


LATENCIES = (1.3, 3.7, 9.1)  # issue 15: a fast, a middling and a slow model


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs: the full suite, ``--quick``, or the smoke test's tiny."""

    label: str
    pickup_generations: int  # per scheduling model
    pickup_spacing: float  # seconds between two arrivals (fixed)
    ttl_generations: int  # time to image: generations per mode and provider latency
    ttl_latencies: tuple[float, ...]  # provider latencies L (s), jittered
    ttl_concurrency: int  # worker threads in the time-to-image runs (no backlog at any L)
    calls_generations: int  # calls per generation: generations per worker setup
    calls_idle_seconds: float  # the idle window measured first (idle polling rate)
    calls_idle_workers: int  # the "many idle workers" setup
    throughput_seconds: float  # ideal busy time per worker count
    throughput_workers: tuple[int, ...]
    throughput_repeats: int  # runs per worker count (the tables show the median)
    queue_jobs: int  # jobs per configuration of the queue-cost runs (pgbench and pgqueuer)
    rest_jobs: int  # jobs per configuration through the REST RPC path
    history_rows: int  # completed jobs in the table for the queue-cost "history" rows
    resource_jobs: int  # jobs of the resource run (two per generation)

    @classmethod
    def full(cls) -> Sizes:
        return cls("full", 100, 1.1, 200, LATENCIES, 16, 40, 60.0, 8, 20.0, (1, 2, 4), 3,
                   10000, 1500, 100000, 10000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls("quick", 25, 1.1, 30, LATENCIES, 16, 20, 20.0, 8, 6.0, (1, 2, 4), 3,
                   2000, 300, 20000, 1000)

    @classmethod
    def tiny(cls) -> Sizes:
        return cls("tiny", 5, 1.1, 3, (0.4,), 4, 3, 2.0, 2, 2.0, (1, 2), 1,
                   200, 40, 1000, 40)


# -- the machine ------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return math.nan


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def machine_info(postgres_version: str | None = None) -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "postgres": postgres_version,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
        "git_commit": _git_commit(),
    }


def machine_line(machine: Mapping[str, Any]) -> str:
    load = machine.get("load_average_at_start") or []
    return (
        f"{machine.get('cpu_count')} CPU ({machine.get('cpu_model')}), "
        f"{machine.get('ram_gib')} GiB RAM, Python {machine.get('python')}, "
        f"{(machine.get('postgres') or '?').split(' on ')[0]}, "
        f"load average at start {' / '.join(str(x) for x in load)}, {machine.get('date')}"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _clean(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(out_dir: Path, result: Result, machine: Mapping[str, Any],
               conditions: Mapping[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.name}.json"
    doc = {
        "benchmark": result.name,
        "title": result.title,
        "machine": machine,
        "conditions": conditions,
        "seconds": round(result.seconds, 1),
        "tables": [t.as_json() for t in result.tables],
        "data": result.data,
    }
    path.write_text(json.dumps(_clean(doc), indent=2, default=_json_default) + "\n")
    return path
