"""The models package imports without cycles: every module imports alone in a fresh interpreter, and the graph of
the package's own imports (`from .x import y`, `from . import x`, `import ssmbench.models.x`, at any depth,
function bodies included) has no cycle, not even one broken by a lazy import. The kernels package is held to the
same static check."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ssmbench.kernels
import ssmbench.models


def package_modules(package) -> dict[str, Path]:
    """Dotted name -> file, for every module of `package` (its __init__ files as the packages' names)."""
    root = Path(package.__file__).parent
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package.__name__, *parts])] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of the same set it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = graph.setdefault(name, set())

        def add(target: str, names=()):  # `from target import names`: target itself, and the names that are modules
            edges.update(m for m in [target, *(f"{target}.{n}" for n in names)] if m in modules)

        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                add(target, [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    for k in range(len(parts), 0, -1):  # the deepest module of the set it names
                        if ".".join(parts[:k]) in modules:
                            add(".".join(parts[:k]))
                            break
        edges.discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n):
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


MODELS = package_modules(ssmbench.models)


def test_the_graph_walk_sees_imports_and_cycles():
    graph = import_graph(MODELS)
    assert "ssmbench.models.layer_registry" in graph["ssmbench.models.blocks"]
    assert "ssmbench.models.blocks" in graph["ssmbench.models.registry"]
    assert "ssmbench.models.layers.base" in graph["ssmbench.models.layers.s6"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", [ssmbench.models, ssmbench.kernels], ids=lambda p: p.__name__)
def test_no_import_cycle(package):
    cycle = find_cycle(import_graph(package_modules(package)))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(MODELS))
def test_each_module_imports_alone(module):
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
