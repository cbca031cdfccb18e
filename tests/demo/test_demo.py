"""The README's first command, in its short variant: it must exit 0 and print the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.mark.timeout(240)
def test_demo_quick_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "demo",
            "--quick",
            "--root",
            str(tmp_path / "stack"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=220,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    text = proc.stdout
    assert "demo OK: every generation reached its expected end" in text
    for label, status in [
        ("flux-schnell", "completed"),
        ("flux-dev img2img", "completed"),
        ("recraft-v3-svg", "completed"),
        ("refused by model", "failed"),
        ("cancelled by user", "cancelled"),
    ]:
        line = next(line for line in text.splitlines() if line.startswith(label))
        assert f" {status} " in line, line
    saved = sorted(p.suffix for p in out.iterdir() if p.name != "worker.log")
    assert saved == [".svg", ".webp", ".webp"]
    assert "Traceback" not in proc.stdout + proc.stderr
