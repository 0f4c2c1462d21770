"""No import circle anywhere in the repository's own code (soo/, benchmarks/, the root scripts).

A circle (a imports b, b imports a, at module level or inside a function) means neither module can
be read, changed or moved on its own; a lazy import only hides it from Python, not from the reader.
Imports are read with ast, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("soo", "benchmarks")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `packages` and every .py file at `root`."""
    modules = {path.stem: path for path in root.glob("*.py")}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The repository modules `module` imports anywhere in its file: for `from a import b`, a.b when
    that is a module, else a; relative imports resolved against the module's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in candidates:
            while name and name not in known:  # `import a.b.c` where only a.b is ours, say
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    known = module_files(root, packages)
    return {module: imported_modules(module, path, known) for module, path in known.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), each as a -> ... -> a."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_path_through(group, graph) for group in groups]


def _path_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A concrete circle inside a strongly connected group: from its first module back to it."""
    start, members = group[0], set(group)
    previous, frontier = {start: None}, [start]
    while frontier:
        module = frontier.pop(0)
        for target in sorted(graph[module] & members):
            if target == start:
                path = [module]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if target not in previous:
                previous[target] = module
                frontier.append(target)
    raise AssertionError(f"{group} is not a circle")


def test_no_import_circle_in_the_repository():
    graph = import_graph(ROOT, PACKAGES)
    assert "benchmarks.gpu_check" in graph and "soo.core.modeling" in graph  # the walk found the code
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    # The test above proves nothing unless a circle like the one benchmarks/ had is found.
    package = tmp_path / "bench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "efficiency.py").write_text("from bench.generation import machine_info\n")
    (package / "generation.py").write_text("def main():\n    from bench import efficiency\n")
    (package / "training.py").write_text("from . import generation\nimport bench.efficiency\n")
    (tmp_path / "script.py").write_text("import bench.training\n")
    graph = import_graph(tmp_path, ("bench",))
    assert graph["bench.training"] == {"bench.generation", "bench.efficiency"}
    assert graph["script"] == {"bench.training"}
    assert import_circles(graph) == [["bench.efficiency", "bench.generation", "bench.efficiency"]]
    (package / "generation.py").write_text("def main():\n    import json\n")
    assert import_circles(import_graph(tmp_path, ("bench",))) == []
