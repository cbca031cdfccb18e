"""The product's import graph, read from the source with ``ast`` (nothing is imported).

- No import loop through ``worker`` or ``functions_compat``: every import counts, those
  inside functions too (a lazy import still closes a loop at run time), and importing
  ``a.b.c`` also imports the packages ``a`` and ``a.b`` (unless the importer lives in
  them: a package's own modules import their siblings through it all the time).
- Neither imports the development distribution (``devstack``, ``bench``) or the tests:
  the runtime image does not contain them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"worker": ROOT / "worker", "functions_compat": ROOT / "supabase" / "functions_compat"}
FORBIDDEN = ("devstack", "bench", "tests")


def module_files(packages: Mapping[str, Path] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py of the packages (``pkg/__init__.py`` is ``pkg``)."""
    found: dict[str, Path] = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every module name an import statement of ``path`` names (absolute and relative)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from pkg import name` may import the submodule pkg.name
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``files`` that importing it runs first."""
    edges: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for name in imported_names(module, path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                target = ".".join(parts[:depth])
                inside = module == target or module.startswith(target + ".")
                if target in files and target != module and not (depth < len(parts) and inside):
                    edges[module].add(target)
    return edges


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_loop_through_the_product() -> None:
    files = module_files()
    assert "worker.cli" in files and "functions_compat.app" in files
    assert cycles(graph(files)) == []


def test_the_product_never_imports_the_development_distribution() -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module, path in module_files().items()
        for name in imported_names(module, path)
        if name.split(".")[0] in FORBIDDEN
    )
    assert offenders == []


# -- the checker itself: it must see the loops it exists to catch ------
def _tree(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = tmp_path / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files({"pkg": tmp_path / "pkg"})


@pytest.mark.parametrize(
    ("files", "loop"),
    [
        (  # the loop this test was written for: cli -> commands -> app -> runtime -> cli
            {
                "__init__.py": "",
                "cli.py": "def main():\n    from pkg import commands\n",
                "commands.py": "def serve():\n    from pkg.app import create\n",
                "app.py": "from pkg.runtime import Runtime\n",
                "runtime.py": "def build():\n    from pkg.cli import main\n",
            },
            ["pkg.app", "pkg.cli", "pkg.commands", "pkg.runtime"],
        ),
        (  # through a package's __init__, with a relative import
            {
                "__init__.py": "",
                "handlers/__init__.py": "from . import generate\n",
                "handlers/generate.py": "from pkg import lifecycle\n",
                "lifecycle.py": "from pkg.handlers.base import X\n",
                "handlers/base.py": "X = 1\n",
            },
            ["pkg.handlers", "pkg.handlers.generate", "pkg.lifecycle"],
        ),
    ],
)
def test_the_checker_finds_loops(tmp_path: Path, files: dict[str, str], loop: list[str]) -> None:
    assert cycles(graph(_tree(tmp_path, files))) == [loop]


def test_a_package_importing_its_own_modules_is_no_loop(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "handlers/__init__.py": "from pkg.handlers import a, b\n",
        "handlers/a.py": "from pkg.handlers.b import f\n",
        "handlers/b.py": "def f(): ...\n",
    }
    assert cycles(graph(_tree(tmp_path, files))) == []
