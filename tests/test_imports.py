"""The package's import graph: no two modules import each other (directly or round a longer circle), and the lower
layers (ops, nn, data) never import the upper ones (config, train, pipeline, report, analysis, bench). Every import
counts, at module level or inside a function: a deferred import still ties the two modules together."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rotrnn"
LOWER = ("rotrnn.ops", "rotrnn.nn", "rotrnn.data")
UPPER = ("rotrnn.config", "rotrnn.train", "rotrnn.pipeline", "rotrnn.report", "rotrnn.analysis", "rotrnn.bench",
         "rotrnn.cli")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a import b`` counts as a.b when a.b is a module)."""
    paths = {_module(p): p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}
    graph = {}
    for name, path in paths.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_that_imports_it_back():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("lower", LOWER)
def test_lower_layers_do_not_import_upper_ones(lower):
    graph = import_graph()
    wrong = sorted(f"{m} -> {d}" for m, deps in graph.items() if m == lower or m.startswith(lower + ".")
                   for d in deps if d.startswith(UPPER))
    assert wrong == []


def test_bench_does_not_import_analysis():
    """rotrnn.analysis times layers with rotrnn.bench's timers; bench importing analysis back would tie the two into
    one, so what both need (the machine in words: rotrnn.machine) lives below both."""
    graph = import_graph()
    wrong = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("rotrnn.bench")
                   for d in deps if d.startswith("rotrnn.analysis"))
    assert wrong == []
