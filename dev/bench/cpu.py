"""CPU seconds (and memory) per process, from /proc, so a benchmark can say where the time
went.

A ``CpuMeter`` is given labelled process ids (each worker, the stack server, Postgres' postmaster,
...) and reads, at start and at stop:

- per label, the CPU of the process tree: ``utime + stime`` of the process and of every live
  descendant, plus ``cutime + cstime`` (the CPU of children that already exited and were
  waited for: Postgres backends that ended during the run are counted by the postmaster);
- the whole machine's busy time from ``/proc/stat`` (all CPUs, every process of every user),
  so ``other`` = machine - the labelled processes = other users' load, the kernel and anything
  not labelled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OTHER = "other (rest of the machine)"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def process_cpu(pid: int, *, children: bool = False) -> float:
    """utime + stime of ``pid`` (all its threads), plus its waited-for children's when asked."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # stat fields 14, 15
    if children:
        ticks += int(fields[13]) + int(fields[14])  # 16, 17: cutime, cstime
    return ticks / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """VmRSS of the process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            out[int(entry.name)] = int(fields[1])  # field 4: ppid
    return out


def tree_cpu(pid: int, parents: Mapping[int, int] | None = None) -> float:
    """CPU seconds of ``pid`` and all its live descendants, plus the exited, waited-for ones."""
    parents = _parents() if parents is None else parents
    tree = {pid}
    grew = True
    while grew:
        new = {child for child, parent in parents.items() if parent in tree} - tree
        grew = bool(new)
        tree |= new
    return sum(process_cpu(p, children=True) for p in tree)


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs): user, nice, system,
    irq, softirq and steal; idle and iowait are not busy."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class CpuReading:
    wall: float
    by_label: dict[str, float]  # CPU seconds per label, OTHER included
    machine: float  # busy CPU seconds of the whole machine

    def cores(self) -> dict[str, float]:
        """Cores kept busy on average (CPU seconds / wall seconds)."""
        return {k: v / self.wall if self.wall > 0 else 0.0 for k, v in self.by_label.items()}


class CpuMeter:
    """``start()``, run the work, ``stop()`` -> CpuReading (differences over the interval).

    ``trees``: labelled processes counted with their descendants; ``alone``: counted without
    them (the benchmark's own process, whose children are the workers, labelled apart)."""

    def __init__(self, trees: Mapping[str, int | None],
                 alone: Mapping[str, int | None] | None = None) -> None:
        self.trees = {label: pid for label, pid in trees.items() if pid is not None}
        self.alone = {label: pid for label, pid in (alone or {}).items() if pid is not None}
        self._began = 0.0
        self._before: dict[str, float] = {}
        self._machine = 0.0

    def _read(self) -> dict[str, float]:
        parents = _parents()
        out = {label: tree_cpu(pid, parents) for label, pid in self.trees.items()}
        out.update({label: process_cpu(pid) for label, pid in self.alone.items()})
        return out

    def start(self) -> CpuMeter:
        self._before = self._read()
        self._machine = machine_busy()
        self._began = time.monotonic()
        return self

    def stop(self) -> CpuReading:
        wall = time.monotonic() - self._began
        after = self._read()
        machine = machine_busy() - self._machine
        by_label = {k: max(0.0, after[k] - self._before.get(k, 0.0)) for k in after}
        by_label[OTHER] = max(0.0, machine - sum(by_label.values()))
        return CpuReading(wall, by_label, machine)
