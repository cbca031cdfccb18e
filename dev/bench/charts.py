"""PNG charts drawn from the benchmarks' JSON results, written next to them.

``render(out)`` reads every ``<out>/<name>.json`` it has a chart for and writes:

- ``time_to_image-cdf.png``: the overhead's distribution per mode (the seed unscaled), one
  panel per provider latency L;
- ``time_to_image-vs-latency.png``: overhead p50 and p99 against L, per mode;
- ``calls-per-generation.png``: HTTP calls to Supabase per generation by kind, per setup;
- ``throughput-workers.png``: generate jobs/s against workers (median, min-max of the
  runs, ideal and perfect scaling), and the CPU each process used in the median run;
- ``resources-rss.png``: the worker's RSS and CPU seconds against completed jobs.

Charts only read the JSON, so ``python -m bench.charts DIR`` redraws them from old results.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 110
Doc = dict[str, Any]


def _save(fig: Figure, path: Path, doc: Doc) -> Path:
    machine = doc.get("machine", {})
    sizes = doc.get("conditions", {}).get("sizes", {}).get("label", "?")
    fig.text(0.01, 0.005, f"{sizes} run, commit {machine.get('git_commit')}, "
             f"{machine.get('date')}, load at start "
             f"{' / '.join(str(x) for x in machine.get('load_average_at_start') or [])}",
             fontsize=7, color="0.4")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _cdf(ax: Axes, values: list[float], label: str) -> None:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return
    ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n})")


def time_to_image(doc: Doc, out: Path) -> list[Path]:
    results = [r for r in doc["data"]["results"] if "skipped" not in r]
    latencies = sorted({r["latency_s"] for r in results})
    if not latencies:
        return []
    fig, axes = plt.subplots(1, len(latencies), figsize=(5.2 * len(latencies), 4.4),
                             squeeze=False, sharey=True)
    for ax, latency in zip(axes[0], latencies, strict=True):
        for r in (r for r in results if r["latency_s"] == latency):
            label = r["label"] + (" (unscaled x60)" if r["time_scale"] != 1 else "")
            _cdf(ax, [v * 1000 for v in r["overheads_unscaled_s"]], label)
        ax.set_xscale("log")
        ax.set_title(f"L = {latency:g} s (+-20 %)")
        ax.set_xlabel("time-to-image overhead, ms (log)")
        ax.axvline(150, color="0.6", ls=":", lw=1)
        ax.axvline(500, color="0.6", ls="--", lw=1)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("share of generations")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Time to image: overhead beyond the prediction's own time (goal lines: "
                 "p50 150 ms, p99 500 ms)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    paths = [_save(fig, out / "time_to_image-cdf.png", doc)]

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for key in dict.fromkeys(r["mode"] for r in results):
        mine = sorted((r for r in results if r["mode"] == key), key=lambda r: r["latency_s"])
        xs = [r["latency_s"] for r in mine]
        label = mine[0]["label"] + (" (unscaled x60)" if mine[0]["time_scale"] != 1 else "")
        line = ax.plot(xs, [r["overhead_unscaled_s"]["median"] * 1000 for r in mine], "o-",
                       label=f"{label} p50")[0]
        ax.plot(xs, [r["overhead_unscaled_s"]["p99"] * 1000 for r in mine], "s--",
                color=line.get_color(), label=f"{label} p99")
    ax.set_yscale("log")
    ax.set_xlabel("provider latency L, s (jittered +-20 %)")
    ax.set_ylabel("overhead, ms (log)")
    ax.set_xticks(latencies)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Time-to-image overhead against the model's latency", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    paths.append(_save(fig, out / "time_to_image-vs-latency.png", doc))
    return paths


def calls(doc: Doc, out: Path) -> list[Path]:
    setups = doc["data"]["setups"]
    kinds = list(dict.fromkeys(k["kind"] for s in setups for k in s["kinds"]))
    fig, ax = plt.subplots(figsize=(9, max(3.2, 1.6 + 1.1 * len(setups))))
    cmap = plt.get_cmap("tab20")
    labels = [f"{s['workers']} worker{'s' if s['workers'] > 1 else ''}" for s in setups]
    left = [0.0] * len(setups)
    for i, kind in enumerate(kinds):
        values = [max(0.0, next((k["per_generation_steady"] for k in s["kinds"]
                                 if k["kind"] == kind), 0.0)) for s in setups]
        ax.barh(labels, values, left=left, color=cmap(i % 20), label=kind,
                hatch="//" if kind.startswith("storage") or "heartbeat" in kind
                or "register" in kind else None)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("HTTP calls to Supabase per generation (steady state: idle polling "
                  "subtracted; hatched: Storage and heartbeats)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Calls per generation by kind", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return [_save(fig, out / "calls-per-generation.png", doc)]


def throughput(doc: Doc, out: Path) -> list[Path]:
    rows = doc["data"]["summary"]
    runs = doc["data"]["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    xs = [r["workers"] for r in rows]
    med = [r["generate_jobs_per_s_steady"] for r in rows]
    low = [m - r["generate_jobs_per_s_steady_min"] for m, r in zip(med, rows, strict=True)]
    high = [r["generate_jobs_per_s_steady_max"] - m for m, r in zip(med, rows, strict=True)]
    left.errorbar(xs, med, yerr=[low, high], fmt="o-", capsize=4, label="measured (median, "
                  "min-max)")
    left.plot(xs, [r["ideal_generate_jobs_per_s"] for r in rows], ":", color="0.5",
              label="ideal N x C / L")
    if rows and rows[0]["workers"] == 1:
        left.plot(xs, [n * med[0] for n in xs], "--", color="0.3",
                  label="perfect scaling N x rate(1)")
    for x, r in zip(xs, rows, strict=True):
        left.annotate(f"{r['scaling_efficiency']:.2f}", (x, r["generate_jobs_per_s_steady"]),
                      textcoords="offset points", xytext=(6, -12), fontsize=8)
    left.set_xlabel("worker processes (C = 3 threads each)")
    left.set_ylabel("generate jobs/s (steady)")
    left.set_xticks(xs)
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    left.set_title("Throughput against workers (labels: scaling efficiency)", fontsize=10)

    medians = {r["workers"]: r for r in runs if _is_median(r, runs)}
    labels = list(dict.fromkeys(k for r in medians.values() for k in _cpu_labels(r)))
    bottom = [0.0] * len(xs)
    for label in labels:
        values = [_cpu_labels(medians[x]).get(label, 0.0) / medians[x]["wall_s"]
                  if x in medians else 0.0 for x in xs]
        right.bar([str(x) for x in xs], values, bottom=bottom, label=label)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    right.set_xlabel("worker processes")
    right.set_ylabel("cores busy (CPU s / wall s)")
    right.legend(fontsize=7)
    right.grid(True, axis="y", alpha=0.3)
    right.set_title("Where the CPU goes (median run)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return [_save(fig, out / "throughput-workers.png", doc)]


def _is_median(run: Doc, runs: list[Doc]) -> bool:
    mine = sorted((r for r in runs if r["workers"] == run["workers"]),
                  key=lambda r: r["generate_jobs_per_s"]["steady"])
    return run is mine[(len(mine) - 1) // 2]


def _cpu_labels(run: Doc) -> dict[str, float]:
    cpu: dict[str, float] = run["cpu_s"]
    out = {"workers": sum(v for k, v in cpu.items() if k.startswith("worker "))}
    out.update({k.split(" (")[0]: v for k, v in cpu.items() if not k.startswith("worker ")})
    return out


def resources(doc: Doc, out: Path) -> list[Path]:
    samples = doc["data"]["samples"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    jobs = [s["jobs"] for s in samples]
    ax.plot(jobs, [s["rss_mib"] for s in samples], "-", label="RSS, MiB")
    ax.axhline(doc["data"].get("rss_goal_mib", 120.0), color="0.6", ls="--", lw=1,
               label="goal 120 MiB")
    ax.set_xlabel("jobs completed")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    cpu = ax.twinx()
    cpu.plot(jobs, [s["cpu_s"] for s in samples], color="tab:orange", label="CPU s")
    cpu.set_ylabel("CPU seconds (cumulative)")
    lines = ax.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    ax.set_title("One worker: RSS and CPU against jobs", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return [_save(fig, out / "resources-rss.png", doc)]


CHARTS: dict[str, Callable[[Doc, Path], list[Path]]] = {
    "time_to_image": time_to_image, "calls": calls, "throughput": throughput,
    "resources": resources,
}


def render(out: Path, names: list[str] | None = None) -> list[Path]:
    """Draw the charts of every result in ``out`` (or of ``names`` only)."""
    paths: list[Path] = []
    for name, draw in CHARTS.items():
        source = out / f"{name}.json"
        if (names is None or name in names) and source.exists():
            paths += draw(json.loads(source.read_text()), out)
    return paths


if __name__ == "__main__":
    for path in render(Path(sys.argv[1] if len(sys.argv) > 1 else "dev/bench/results")):
        print(path)
