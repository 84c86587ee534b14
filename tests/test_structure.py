"""The codebase's shape (issue 9): module-level classes, short functions, no import cycles.

Static checks on the source with :mod:`ast` (nothing is imported), so they
run in well under a second.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "models")
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            out[name] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return out


MODULES = _modules()


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_class_is_defined_inside_a_function():
    found = [
        f"{path.relative_to(REPO)}: class {inner.name} in {func.name}()"
        for path, tree in MODULES.values()
        for func in _functions(tree)
        for inner in ast.walk(func)
        if isinstance(inner, ast.ClassDef)
    ]
    assert not found, found


def test_no_function_is_longer_than_80_lines():
    found = [
        f"{path.relative_to(REPO)}:{func.lineno} {func.name}() has {func.end_lineno - func.lineno + 1} lines"
        for path, tree in MODULES.values()
        for func in _functions(tree)
        if func.end_lineno - func.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not found, found


def import_graph(modules: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere (function-level imports included)."""
    graph: dict[str, set[str]] = {}
    for name, (_, tree) in modules.items():
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}  # from pkg import module
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_utils_and_models():
    graph = import_graph(MODULES)
    assert "utils.keras_metrics" in graph and "utils.metrics" in graph["utils.keras_metrics"]  # the graph is real
    assert cycles(graph) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_uses_postponed_annotations(name):
    path, tree = MODULES[name]
    code = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if not code:  # a package docstring only
        return
    futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    assert any(a.name == "annotations" for n in futures for a in n.names), path


# ---------------------------------------------------------------------------
# File names live in utils/constants.py
# ---------------------------------------------------------------------------

FILE_NAME = re.compile(r"^[\w<>{}/.-]*\w\.(png|json|jsonl|csv|npy|h5|keras|log|txt)$")
# The modules of a training run and its analysis: no file-name literal at all.
RUN_MODULES = (
    "utils.analysis", "utils.plotting", "utils.run_plots", "utils.run_logging", "utils.run_log",
    "utils.run_log_callbacks", "utils.resume", "utils.run_folder", "utils.training", "utils.callbacks",
    "utils.config", "utils.cli", "utils.history",
)


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _constant_file_names() -> set[str]:
    """File names of utils.constants (the cross-validation ones excepted)."""
    import utils.constants as C

    names = set()
    for key, value in vars(C).items():
        if key.startswith("CV_"):  # generic names (summary.json, results.csv) other tools may also use
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, str) and FILE_NAME.match(item):
                names.add(item)
    return names


def test_the_run_modules_hold_no_file_name_literal():
    found = [
        f"{MODULES[m][0].relative_to(REPO)}:{n.lineno} {n.value!r}"
        for m in RUN_MODULES
        for n in _string_literals(MODULES[m][1])
        if FILE_NAME.match(n.value)
    ]
    assert not found, found


def test_no_module_or_script_retypes_a_file_name_of_constants():
    names = _constant_file_names()
    assert {"run_manifest.json", "training_history.npy", "metrics.json"} <= names  # the scan is real
    paths = [p for p, _ in MODULES.values() if p.name != "constants.py"] + sorted((REPO / "scripts").glob("*.py"))
    found = [
        f"{path.relative_to(REPO)}:{n.lineno} {n.value!r}"
        for path in paths
        for n in _string_literals(ast.parse(path.read_text(encoding="utf-8")))
        if n.value in names
    ]
    assert not found, found
