"""The package layout holds its design: imports point one way, and each package's map is true."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SOO = Path(__file__).resolve().parent.parent / "soo"

# Which soo packages each package may import (itself always). Evaluation never imports training.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "train": {"core", "data"},
    "eval": {"core", "data"},
    "rl": {"core"},
    "organism": {"core", "data", "train", "eval"},
    "tools": {"core", "data", "train", "eval"},
    "sweep": {"core", "data", "train", "eval"},
    "subliminal": {"core", "data", "train", "eval"},
}


def soo_imports(path: Path) -> set[str]:
    """Every soo.* module that `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "soo" or name.startswith("soo.")}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    violations = []
    for path in sorted((SOO / package).rglob("*.py")):
        for module in soo_imports(path):
            target = package_of(module)
            if target is not None and target != package and target not in ALLOWED[package]:
                violations.append(f"{path.relative_to(SOO.parent)} imports {module}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_lazy_imports(tmp_path):
    # A violation hidden inside a function must still be found, or the test above proves nothing.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from soo.train.trainer import SOOTrainer\n")
    assert package_of(next(iter(soo_imports(module) - {"soo.train.trainer"}))) == "train"


def _mapped_names(docstring: str) -> set[str]:
    # Map lines look like "  name   what it is" (two or more spaces after the name).
    return {match.group(1) for match in re.finditer(r"^ {0,4}([a-z_]+) {2,}\S", docstring, re.MULTILINE)}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_docstring_maps_exactly_its_modules(package):
    docstring = ast.get_docstring(ast.parse((SOO / package / "__init__.py").read_text(encoding="utf-8"))) or ""
    modules = {path.stem for path in (SOO / package).glob("*.py") if path.stem != "__init__"}
    mapped = _mapped_names(docstring)
    assert modules <= mapped, f"soo/{package}/__init__.py does not list {sorted(modules - mapped)}"
    assert mapped <= modules, f"soo/{package}/__init__.py lists modules that do not exist: {sorted(mapped - modules)}"


def test_top_level_docstring_maps_exactly_the_packages():
    import soo

    packages = {path.parent.name for path in SOO.glob("*/__init__.py")}
    assert _mapped_names(soo.__doc__) == packages


REPO = SOO.parent


def private_names_imported(path: Path) -> list[str]:
    """`module._name` for each private name that `path` imports from another module (importing a
    private submodule, e.g. `from pkg import _helpers`, is not counted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            folder = REPO.joinpath(*node.module.split("."))
            for alias in node.names:
                submodule = (folder / f"{alias.name}.py").is_file() or (folder / alias.name).is_dir()
                if alias.name.startswith("_") and not alias.name.startswith("__") and not submodule:
                    found.append(f"{node.module}.{alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    # A private name may change with its module; a second module that needs it needs a public one.
    sources = sorted([*SOO.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py"), *REPO.glob("*.py")])
    violations = [
        f"{path.relative_to(REPO)} imports {name}" for path in sources for name in private_names_imported(path)
    ]
    assert not violations, "\n".join(violations)


def test_the_private_name_checker_sees_one_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from soo.eval.generation import DecodingConfig, _generate\n")
    assert private_names_imported(module) == ["soo.eval.generation._generate"]


def test_the_inspect_task_scores_without_evaluates_engine():
    # The Inspect task and evaluate.py share the scorer (soo.eval.rates), not evaluate.py's run.
    assert not any(module.startswith("soo.eval.engine") for module in soo_imports(SOO / "eval" / "inspect_task.py"))


# A module a reader can hold in mind; past this, split it along its seams. Data tables (scenario
# texts, templates) are long because their content is, and are named here rather than split.
MAX_MODULE_LINES = 400
DATA_TABLES = ("soo/eval/scenarios.py", "soo/data/templates.py")


def python_sources() -> list[Path]:
    """Every module of soo/ and benchmarks/, and the root scripts."""
    return sorted([*SOO.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py"), *REPO.glob("*.py")])


def modules_over(limit: int, paths: list[Path], root: Path) -> list[str]:
    long = []
    for path in paths:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            long.append(f"{path.relative_to(root).as_posix()} ({lines} lines)")
    return long


def test_no_module_is_over_400_lines_except_the_data_tables():
    assert all((REPO / table).is_file() for table in DATA_TABLES), "a data table moved: update DATA_TABLES"
    paths = [path for path in python_sources() if path.relative_to(REPO).as_posix() not in DATA_TABLES]
    long = modules_over(MAX_MODULE_LINES, paths, REPO)
    assert not long, f"over {MAX_MODULE_LINES} lines, split along their seams:\n" + "\n".join(long)


def test_the_length_checker_sees_a_long_module(tmp_path):
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    paths = sorted(tmp_path.glob("*.py"))
    assert modules_over(MAX_MODULE_LINES, paths, tmp_path) == [f"long.py ({MAX_MODULE_LINES + 1} lines)"]


PLOTTING = SOO / "core" / "plotting.py"


def matplotlib_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "matplotlib"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "matplotlib":
            found.append(node.module)
    return found


def test_only_soo_core_plotting_imports_matplotlib():
    # The Agg backend is chosen in one place; every plot takes pyplot from soo.core.plotting.pyplot().
    violations = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in python_sources()
        if path != PLOTTING
        for name in matplotlib_imports(path)
    ]
    assert not violations, "\n".join(violations)
    assert matplotlib_imports(PLOTTING), "soo/core/plotting.py no longer imports matplotlib: update this test"


def test_importing_the_reports_does_not_import_matplotlib():
    # matplotlib is imported when a plot is drawn, not when a report module is imported.
    import subprocess
    import sys

    modules = ["soo.eval.report", "soo.eval.plots", "soo.rl.plots", "soo.sweep.report", "soo.organism.report"]
    code = f"import sys\nfor name in {modules!r}:\n    __import__(name)\nprint('matplotlib' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
    )
    assert completed.stdout.strip() == "False"


def test_pyplot_draws_with_the_agg_backend(tmp_path):
    from soo.core.plotting import pyplot

    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    figure.savefig(tmp_path / "line.png")
    plt.close(figure)
    assert (tmp_path / "line.png").stat().st_size > 0
