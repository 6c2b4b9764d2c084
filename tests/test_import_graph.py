"""The package's layering holds: no import cycle between routeguard's packages and top-level
modules (counting imports inside functions and under TYPE_CHECKING, which hide cycles
rather than remove them), and every package imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import routeguard

ROOT = Path(routeguard.__file__).parent
UNITS = sorted(  # packages, modules and the compiled extension (_core)
    {
        p.name.split(".")[0]
        for p in ROOT.iterdir()
        if (p.suffix in (".py", ".so", ".pyd") and p.stem != "__init__")
        or (p / "__init__.py").is_file()
    }
    | {"_core"}
)


def _unit(module: str) -> str:
    """The package or top-level module ``module`` belongs to (``routeguard`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in UNITS else "routeguard"


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every routeguard module ``path`` imports, wherever the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:  # `from routeguard import scrub` imports routeguard.scrub
                yield f"{base}.{a.name}" if base == "routeguard" and a.name in UNITS else base


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {u: set() for u in [*UNITS, "routeguard"]}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for target in _imports(path, module):
            if target == "routeguard" or target.startswith("routeguard."):
                a, b = _unit(module), _unit(target)
                if a != b:
                    graph[a].add(b)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_the_layers() -> None:
    graph = _graph()
    assert {"gateway", "config", "server", "providers", "routing"} <= set(graph)
    assert "config" in graph["gateway"] and "gateway" in graph["server"]


def test_no_import_cycles_between_packages() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("unit", [u for u in UNITS if not u.startswith("_")])
def test_each_package_imports_alone(unit: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", f"import routeguard.{unit}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
