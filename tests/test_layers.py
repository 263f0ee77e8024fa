"""The data order of the packages holds: a package never imports one above it, and no file
imports itself back through others (imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

# Lower number = lower in the data order; packages with the same number sit side by side and
# may not import each other either.
LAYERS = {"cxr": 0, "graphdb": 1, "encoders": 2, "retrieval": 2, "generator": 3, "training": 4,
          "r2genkg": 5, "scripts": 5, "benchmarks": 5}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in LAYERS for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``path`` imports, resolved to the longest known module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            parts = target.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in modules:
                    if candidate != name:
                        found.add(candidate)
                    break
    return found


def _graph() -> dict[str, set[str]]:
    modules = _sources()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_no_package_imports_one_above_or_beside_it():
    bad = []
    for name, targets in _graph().items():
        own = name.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != own and LAYERS[other] >= LAYERS[own] and not (own in ("scripts", "benchmarks")
                                                                      and other == "r2genkg"):
                bad.append(f"{name} imports {target}")
    assert not bad, "imports against the data order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_between_files():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ re-exporting its own modules is not a cycle of concerns
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)
