"""A small, thread-safe Prometheus registry (text exposition format 0.0.4)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: Sequence[tuple[str, str]] = ()) -> str:
    items = [*labels, *extra]
    if not items:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in items
    )
    return "{" + body + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(
            dict
        )  # bucket counts + sum + count
        self._buckets: dict[str, Sequence[float]] = {}
        self._help: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, text: str, buckets: Sequence[float] = ()) -> None:
        self._help[name] = (kind, text)
        if buckets:
            self._buckets[name] = buckets

    def described(self) -> dict[str, str]:
        """Every described metric and its type (also those with no sample yet)."""
        return {name: kind for name, (kind, _text) in self._help.items()}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets = self._buckets.get(name, DURATION_BUCKETS)
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._hist[name].setdefault(key, [0.0] * (len(buckets) + 2))
            for i, bound in enumerate(buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            for table in (self._counters, self._gauges):
                if name in table and key in table[name]:
                    return table[name][key]
        return 0.0

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for table, kind in ((self._counters, "counter"), (self._gauges, "gauge")):
                for name, series in sorted(table.items()):
                    self._header(lines, name, kind)
                    for labels, value in sorted(series.items()):
                        lines.append(f"{name}{_fmt_labels(labels)} {value:g}")
            for name, hseries in sorted(self._hist.items()):
                self._header(lines, name, "histogram")
                buckets = self._buckets.get(name, DURATION_BUCKETS)
                for labels, counts in sorted(hseries.items()):
                    for i, bound in enumerate(buckets):
                        le = _fmt_labels(labels, [("le", f"{bound:g}")])
                        lines.append(f"{name}_bucket{le} {counts[i]:g}")
                    lines.append(
                        f"{name}_bucket{_fmt_labels(labels, [('le', '+Inf')])} {counts[-1]:g}"
                    )
                    lines.append(f"{name}_sum{_fmt_labels(labels)} {counts[-2]:.6f}")
                    lines.append(f"{name}_count{_fmt_labels(labels)} {counts[-1]:g}")
        return "\n".join(lines) + "\n"

    def _header(self, lines: list[str], name: str, kind: str) -> None:
        declared_kind, text = self._help.get(name, (kind, name))
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {declared_kind}")


def worker_metrics() -> Metrics:
    m = Metrics()
    m.describe("picture_worker_jobs_total", "counter", "Jobs finished, by type and outcome.")
    m.describe(
        "picture_worker_job_duration_seconds",
        "histogram",
        "Job run time, by type and outcome.",
        DURATION_BUCKETS,
    )
    m.describe(
        "picture_worker_pickup_latency_seconds",
        "histogram",
        "Due time to claim, by type.",
        LATENCY_BUCKETS,
    )
    m.describe("picture_worker_jobs_in_flight", "gauge", "Jobs running now.")
    m.describe("picture_worker_concurrency", "gauge", "Size of the job thread pool.")
    m.describe(
        "picture_worker_realtime_connected", "gauge", "1 while the Realtime subscription is live."
    )
    m.describe(
        "picture_worker_claims_total",
        "counter",
        "Claim rounds, by result: jobs, empty (nothing claimable), error.",
    )
    m.describe("picture_worker_realtime_reconnects_total", "counter", "Realtime (re)subscriptions.")
    m.describe(
        "picture_worker_generate_paused",
        "gauge",
        "1 while generate-image claims are paused (provider 402).",
    )
    return m
