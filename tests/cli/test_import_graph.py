"""No import cycles between tiletune's modules: a cycle means a concept is in the wrong room.

The graph is read from the source (every import statement, at module level or inside a function,
under `TYPE_CHECKING` too), with each top-level folder mapped to its subpackage of `tiletune` as
pyproject.toml's package-dir maps it. An import `from a.b import c` points at the module `a.b.c`
where there is one, else at `a.b`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]

# None is allowed. (There is no Ray-related one: search/backends.py imports the optional Ray
# backend inside open_backend, and both backends read device requests from search/devices.py.)


def project_modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, whether it is a package's __init__)."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in package_dir.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            modules[".".join((package, *(parts[:-1] if is_package else parts)))] = (path, is_package)
    return modules


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: the line of the first such import}."""

    def known(name: str) -> str | None:  # the module itself, or the package that holds the name
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = graph[name] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]) if node.level else node.module
                base = base.rstrip(".")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for target in filter(None, map(known, targets)):
                if target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = {stack.pop()}
            while module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_graph_sees_function_level_imports_and_the_folder_mapping() -> None:
    graph = import_graph(project_modules())
    assert "tiletune.kernels.lower" in graph and "tiletune.tuning_db.db" in graph
    # search/backends.py imports the Ray backend inside open_backend only
    assert "tiletune.search.ray_backend" in graph["tiletune.search.backends"]
    assert "tiletune.errors" in graph["tiletune.cli_errors"]


def test_no_import_cycles_between_project_modules() -> None:
    graph = import_graph(project_modules())
    found = list(cycles(graph))
    lines = []
    for component in found:
        lines.append("cycle: " + ", ".join(sorted(component)))
        for module in sorted(component):
            path = project_modules()[module][0].relative_to(ROOT)
            lines += [f"  {path}:{line} imports {other}" for other, line in sorted(graph[module].items())
                      if other in component]
    assert not found, "import cycles between project modules:\n" + "\n".join(lines)
