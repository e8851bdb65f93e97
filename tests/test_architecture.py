"""The house runs one way: no import cycles, and no layer imports the ones above it.

The import graph is drawn from the source with ``ast``, imports inside functions included;
only a record showing itself (the display protocols, and thin ``to_*`` methods that call the
renderer of their name) may import a renderer lazily.  docs/architecture.md draws the layers;
every path it names must exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PROTOCOLS = {"__str__", "__repr__", "__rich_console__", "__rich__", "_repr_html_", "_repr_markdown_", "__format__"}
# Methods of a record that call exactly the renderer of their name (docs/architecture.md).
THIN_RENDERERS = {"to_dict", "to_json", "to_csv", "to_markdown", "to_html", "to_dataframe", "table", "explain"}
# Packages below the pipeline, and what none of them may import.
LOWER = ("nncost.capture", "nncost.rules", "nncost.records", "nncost.analyses", "nncost.hardware",
         "nncost.simulation", "nncost.sources")
UPPER = ("nncost.api", "nncost.pipeline", "nncost.stages", "nncost.cli", "nncost.request",
         "nncost.hardware.calibration", "nncost.render")


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "nncost").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _target(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The nncost modules an import statement reaches."""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    else:
        names = [alias.name for alias in node.names]
    reached = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            reached.add(name)
    return reached


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, the enclosing function's name or None) for every import that counts."""
    tree = ast.parse(MODULES[module].read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped |= {id(n) for n in ast.walk(node)}
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if id(child) in skipped:
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, function or child.name)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((target, function) for target in _target(module, child))
            else:
                visit(child, function)

    visit(tree, None)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        edges = {target for target, function in _imports(module) if function not in PROTOCOLS}
        if MODULES[module].name == "__init__.py":  # a package re-exporting its children
            edges = {t for t in edges if not t.startswith(module + ".")}
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    graph = _graph()
    assert len(graph) > 60
    assert "nncost.pipeline" in graph["nncost.api"] and "nncost.pipeline" in graph["nncost.cli"]
    assert "nncost.capture.run" in graph["nncost.stages.forward"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found() -> None:
    graph = _graph()
    graph["nncost.records.report"] = graph["nncost.records.report"] | {"nncost.api"}
    assert any("nncost.api" in cycle and "nncost.records.report" in cycle for cycle in _cycles(graph))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(LOWER)))
def test_lower_layers_never_import_upper_ones(module: str) -> None:
    for target, function in _imports(module):
        if not target.startswith(UPPER):
            continue
        shows_itself = module.startswith("nncost.records.") and target.startswith("nncost.render") and (
            function in PROTOCOLS or function in THIN_RENDERERS)
        assert shows_itself, f"{module} imports {target} (in {function or 'the module body'})"


def test_capture_reads_no_source_but_the_onnx_file_it_costs() -> None:
    """Sources (model names, configs, saved files) sit above the capture: they may run it, not the reverse."""
    importers = {(m, t) for m, edges in _graph().items() if m.startswith("nncost.capture")
                 for t in edges if t.startswith("nncost.sources")}
    assert importers <= {("nncost.capture.onnx.read", "nncost.sources.onnx")}


def test_only_the_front_ends_import_the_pipeline() -> None:
    importers = {m for m, edges in _graph().items() if "nncost.pipeline" in edges}
    assert importers <= {"nncost", "nncost.api", "nncost.cli"}


def _named_paths() -> list[tuple[str, list[str]]]:
    """The paths docs/architecture.md names in backticks outside its code blocks (but those it
    marks ``(new)``), each with the names given in backticks in the parentheses after it."""
    prose = re.sub(r"```.*?```", "", ARCHITECTURE.read_text(), flags=re.S)
    found = []
    for match in re.finditer(r"`([\w.-]*/[\w./-]*|[\w-]+\.(?:py|json|md))`(?! \(new\))( \(([^)]*)\))?", prose):
        found.append((match[1], re.findall(r"`(\w+)`", match[3] or "")))
    return found


def test_every_path_the_architecture_names_exists() -> None:
    """Paths are the repository's (``docs/``, ``tests/``) or, as the page says, under ``src/nncost/``;
    a name in parentheses after a module is defined or used in it."""
    named = _named_paths()
    assert len(named) > 50
    for path, names in named:
        where = [base / path for base in (ROOT, SRC / "nncost") if (base / path).exists()]
        assert where, f"docs/architecture.md names {path}, which does not exist"
        if path.endswith(".py"):
            text = where[0].read_text()
            missing = [name for name in names if not re.search(rf"\b{name}\b", text)]
            assert not missing, f"docs/architecture.md names {missing} in {path}, which has no such name"
