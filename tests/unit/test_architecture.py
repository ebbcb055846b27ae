"""The layering of SPEC 1, checked from the code's own imports (every import, including
those inside functions): shards <- indexer <- trainers <- cluster, the benchmark runner
beside them, no import cycle inside a package, and the size limits of the house style."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("shards", "indexer", "trainers", "cluster")
# what each package may import (besides itself); bench's library modules sit beside
# cluster: the CLI runs them, they never import cluster
ALLOWED = {
    "shards": set(),
    "indexer": {"shards"},
    "trainers": {"shards", "indexer"},
    "bench": {"shards", "indexer", "trainers"},
    "cluster": {"shards", "indexer", "trainers", "bench"},
}
PROJECT = set(ALLOWED)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every project module an import statement of `path` names, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    module_name = _module_name(path) if path.is_relative_to(REPO) else path.stem
    package = module_name if path.name == "__init__.py" else module_name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, node.lineno))
            # `from pkg import mod` names a module too
            out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return [(m, line) for m, line in out if m.split(".")[0] in PROJECT]


def _package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _existing(module: str) -> str | None:
    """The module itself if it is a file of the repo, else its parent (a name imported
    from a module), else None."""
    for candidate in (module, module.rsplit(".", 1)[0]):
        path = REPO / candidate.replace(".", "/")
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return candidate
    return None


def _bench_library_modules() -> set[str]:
    """bench modules that cluster/ imports, and what they import in turn (the standalone
    scripts under bench/ are entry points, run as `python bench/x.py`)."""
    todo = [m for path in _package_files("cluster") for m, _ in _imports(path)
            if m.startswith("bench")]
    seen: set[str] = set()
    while todo:
        module = _existing(todo.pop())
        if module is None or module in seen or not module.startswith("bench"):
            continue
        seen.add(module)
        path = REPO / module.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        todo += [m for m, _ in _imports(path)]
    return seen


def test_every_import_points_down_a_layer():
    bad = {}
    files = [p for layer in LAYERS for p in _package_files(layer)]
    files += [REPO / (m.replace(".", "/") + ".py") for m in _bench_library_modules()
              if (REPO / (m.replace(".", "/") + ".py")).is_file()]
    for path in files:
        own = path.relative_to(REPO).parts[0]
        for module, line in _imports(path):
            target = module.split(".")[0]
            if target != own and target not in ALLOWED[own]:
                bad.setdefault(f"{path.relative_to(REPO)}:{line}", f"imports {module}")
    assert not bad, "imports that point up a layer:\n" + "\n".join(
        f"{where} {what}" for where, what in bad.items())


def test_core_never_imports_ray():
    for layer in ("shards", "indexer", "trainers"):
        for path in _package_files(layer):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "ray" or n.startswith("ray.") for n in names), path


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_cycle_inside_a_package(package):
    graph: dict[str, set[str]] = {}
    for path in _package_files(package):
        here = _module_name(path)
        graph[here] = {m for m in (_existing(name) for name, _ in _imports(path))
                       if m and m.split(".")[0] == package and m != here
                       and m != package}   # the package __init__ re-exports, not a cycle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_package_level_cycle():
    edges = {layer: set() for layer in LAYERS}
    for layer in LAYERS:
        for path in _package_files(layer):
            edges[layer] |= {m.split(".")[0] for m, _ in _imports(path)
                             if m.split(".")[0] in LAYERS} - {layer}
    order = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [(a, b) for a, targets in edges.items() for b in targets if order[b] > order[a]]
    assert not upward, f"package edges that point up: {upward}"


def test_module_and_function_sizes():
    long_modules, long_functions = [], []
    for layer in LAYERS:
        for path in _package_files(layer):
            text = path.read_text()
            name = path.relative_to(REPO)
            if len(text.splitlines()) > MAX_MODULE_LINES:
                long_modules.append(f"{name}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        long_functions.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    """The checks above can fail: an upward import hidden in a function body is seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\n\ndef f():\n    from indexer import VLQIndex\n")
    assert _imports(bad) == [("indexer", 4), ("indexer.VLQIndex", 4)]
