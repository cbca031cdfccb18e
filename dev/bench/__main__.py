"""``python -m bench [--quick] [--only NAME ...] [--out dev/bench/results]``

Brings up one local stack (PostgreSQL 15 with fsync on, the Supabase-compatible server,
the fake Replicate) in a temporary folder, runs the benchmarks on it one after another,
prints every table, and writes ``<out>/<name>.json`` per benchmark plus ``<out>/report.md``
(the tables of every ``<name>.json`` in ``<out>`` as Markdown, with its charts),
``<out>/<name>-<chart>.png`` (``bench.charts``), ``<out>/summary.json`` and the workers'
logs in ``<out>/logs``. Everything it starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench import calls, charts, pickup, queue_cost, resources, throughput, time_to_image
from bench.common import ROOT, Result, Sizes, Table, machine_info, machine_line, write_json
from bench.harness import BenchEnv

BENCHMARKS: dict[str, ModuleType] = {
    m.NAME: m for m in (pickup, time_to_image, calls, throughput, queue_cost, resources)
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 5 minutes)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "dev" / "bench" / "results",
                        help="folder for the JSON results and report.md")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke test
    return parser.parse_args(argv)


def run_all(names: list[str], sizes: Sizes, out: Path,
            echo: Callable[[str], None] = print) -> dict[str, Result]:
    machine = machine_info()  # load average before the stack starts
    env = BenchEnv(log_dir=out / "logs")
    results: dict[str, Result] = {}
    failures: dict[str, str] = {}
    try:
        machine["postgres"] = env.postgres_version()
        conditions = {"sizes": sizes.__dict__, "stack": "local devstack, fsync on (fast=False)",
                      "benchmarks": names}
        echo(f"machine: {machine_line(machine)}")
        echo(f"sizes: {sizes.label}; stack in {env.root}\n")
        for name in names:
            module = BENCHMARKS[name]
            echo(f"--- {name}: {module.TITLE} ...")
            began = time.monotonic()
            try:
                result: Result = module.run(env, sizes)
                result.seconds = time.monotonic() - began
                path = write_json(out, result, machine, conditions)
                pngs = charts.render(out, [name])
            except Exception:  # report and go on: one broken benchmark must not hide the rest
                failures[name] = traceback.format_exc()
                echo(failures[name])
                continue
            results[name] = result
            echo(result.text())
            echo(f"({result.seconds:.0f} s; {', '.join(_shown(p) for p in [path, *pngs])})\n")
    finally:
        env.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_report(out))
    (out / "summary.json").write_text(json.dumps({
        "machine": machine, "sizes": sizes.label,
        "seconds": {n: round(r.seconds, 1) for n, r in results.items()},
        "failed": sorted(failures),
    }, indent=2) + "\n")
    if failures:
        raise RuntimeError(f"benchmarks failed: {', '.join(sorted(failures))}")
    return results


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def render_report(out: Path) -> str:
    """Every ``<out>/<name>.json`` present (this run's and earlier ``--only`` runs') as one
    Markdown page, each section with its own run conditions."""
    lines: list[str] = []
    for name in BENCHMARKS:
        path = out / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        sizes = doc.get("conditions", {}).get("sizes", {}).get("label", "?")
        lines += [f"## {doc['title']}", "",
                  f"Sizes: {sizes}; {doc.get('seconds')} s. Machine: "
                  f"{machine_line(doc.get('machine', {}))}.", ""]
        for table in doc.get("tables", []):
            t = Table(table["title"], table["columns"], table["rows"], table["notes"])
            lines += [t.markdown(), ""]
        lines += [f"![{png.stem}]({png.name})" for png in sorted(out.glob(f"{name}-*.png"))]
        lines += [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes.tiny() if args.tiny else Sizes.quick() if args.quick else Sizes.full()
    names = args.only or list(BENCHMARKS)
    began = time.monotonic()
    try:
        run_all(names, sizes, args.out)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"total {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
