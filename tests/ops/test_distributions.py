"""The two distributions, built as wheels the way pip builds them: the product
(picture-worker: ``worker`` and ``functions_compat``) and the development distribution
(picture-worker-dev in dev/: ``devstack`` and ``bench``, which registers ``stack`` and
``demo`` into ``picture-worker``). Packages are discovered, not listed, and these tests keep
it that way: every module of each wheel imports from the wheel alone, the product holds no
development code, and the dev wheel carries its data files and its command entry points."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    out = tmp_path_factory.mktemp("wheels")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out), str(ROOT), str(ROOT / "dev")],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"picture_worker", "picture_worker_dev"}, found
    yield found


def _unpack(wheel: Path, dest: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
        return set(zf.namelist())


def _modules(root: Path, package: str) -> list[str]:
    return sorted(
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for p in (root / package).rglob("*.py")
        if p.name != "__main__.py"
    )


def _import_all_from(root: Path, modules: list[str]) -> None:
    """Import every module with only the unpacked wheel ahead of the installed packages;
    each must come from the wheel (a package missing from it would fail or load elsewhere)."""
    code = (
        "import importlib, sys\n"
        f"root = {str(root)!r}\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    mod = importlib.import_module(name)\n"
        "    if not (mod.__file__ or '').startswith(root):\n"
        "        bad.append(f'{name} from {mod.__file__}')\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True, text=True, timeout=120, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_product_wheel_holds_the_product_and_nothing_of_the_dev_stack(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    names = _unpack(wheels["picture_worker"], tmp_path)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"worker", "functions_compat"}
    assert "worker/adapters/rest.py" in names
    assert "functions_compat/app.py" in names
    modules = _modules(tmp_path, "worker") + _modules(tmp_path, "functions_compat")
    assert len(modules) > 40
    _import_all_from(tmp_path, modules)


def test_dev_wheel_holds_the_stack_its_data_and_registers_its_commands(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    names = _unpack(wheels["picture_worker_dev"], tmp_path)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"devstack", "bench"}
    assert "devstack/bootstrap.sql" in names
    schemas = [n for n in names if n.startswith("devstack/fake_replicate/schemas/")]
    source_schemas = list((ROOT / "dev/devstack/fake_replicate/schemas").glob("*.json"))
    assert len(schemas) == len(source_schemas) > 10
    for service in ("rest", "storage", "auth", "realtime", "fake_replicate"):
        assert f"devstack/{service}/__init__.py" in names, service
    _import_all_from(tmp_path, _modules(tmp_path, "devstack"))

    entry_points = next(tmp_path.glob("*.dist-info")) / "entry_points.txt"
    parser = configparser.ConfigParser()
    parser.read(entry_points)
    commands = dict(parser["picture_worker.commands"])
    assert commands == {
        "stack": "devstack.cli:register_stack",
        "demo": "devstack.cli:register_demo",
    }


def test_the_cli_lists_the_dev_commands_only_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    from worker.cli import build_parser

    registered = {e.name for e in entry_points(group="picture_worker.commands")}
    assert registered == {"stack", "demo"}  # this checkout installs dev/ (scripts/setup.sh)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"stack", "demo", "run", "status"} <= set(sub.choices)  # type: ignore[attr-defined]
