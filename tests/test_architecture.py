"""The house's rules, read from the code's own imports (docs/architecture.md draws them).

Each package stands on a floor and may import only packages on lower floors (and itself); within the ground
floor, the order protocol < messaging < storage holds too. No module imports another that, through any chain,
imports it back, and an import written inside a function or under ``TYPE_CHECKING`` counts like any other:
nothing dodges a circle. And no module over 500 lines or function over 80 (migrations aside).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> rank: a package may import only packages of a lower rank. Equal ranks are neighbours on one
# floor and may not import each other (the monitor, central and the gateway talk through the database).
RANKS: dict[str, int] = {
    "protocol": 0,
    "messaging": 1,
    "storage": 2,
    "care": 3,
    "devices": 3,
    "gateway": 4,
    "monitor": 4,
    "central": 4,
    "carealarm": 5,
    "bench": 6,
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in RANKS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module or package imported) for every import in the file, nested ones included."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            stem = ".".join([*base, node.module] if node.module else base)
            for alias in node.names:
                full = f"{stem}.{alias.name}"
                yield node.lineno, full if full in MODULES else stem


def _target(imported: str) -> str | None:
    """The module of ours that an import names (the nearest enclosing one), or None for a library."""
    parts = imported.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, imported in _imports(name, path):
            target = _target(imported)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def test_every_import_goes_down_the_floors() -> None:
    wrong = []
    for name, path in MODULES.items():
        own = name.split(".")[0]
        for line, imported in _imports(name, path):
            other = imported.split(".")[0]
            if other in RANKS and other != own and RANKS[other] >= RANKS[own]:
                where = f"{path.relative_to(ROOT)}:{line}"
                wrong.append(f"{where} imports {imported} ({own} {RANKS[own]} -> {other} {RANKS[other]})")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(wrong)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return circles


def test_no_module_imports_itself_back_through_others() -> None:
    assert _circles(_edges()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    """The check above can fail: a made-up loop of three and a self-contained pair are both found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(_circles(graph)) == [["a", "b", "c"], ["d", "e"]]


@pytest.mark.parametrize("package", sorted(RANKS))
def test_modules_and_functions_stay_small(package: str) -> None:
    big = []
    for name, path in MODULES.items():
        if name.split(".")[0] != package or "migrations" in path.parts:
            continue
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not big, "too big:\n" + "\n".join(big)
