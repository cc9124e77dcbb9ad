"""The layering of irc's modules, enforced: data flows one way, ONNX → IR → passes →
kernels, and the decision, the benchmark and the tools are clients of the compile stages.

Every import in the product (``irc/``, ``frontends/``, ``backends/``, ``passes/``,
``tools/``) and in ``bench/`` is read from the source (imports inside functions
included) and must point to its own layer or one below it in ``LAYERS``. Within a layer,
only the IR core and the ONNX importer may import in a circle (the op table and its entries,
the importer and its converters register into each other at import). An import inside a
function is allowed only with a comment on its line (or the line above) saying why, and at most
``MAX_FUNCTION_IMPORTS`` of them. Nothing outside the backend (and ``irc.compiled``, the
``CompiledModel`` that holds the backend's driver) reads the generated driver's internals.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[2]
# folder of the repository -> the import package it installs as (pyproject's package-dir)
PACKAGES = {"irc": "irc", "frontends": "irc.frontends", "backends": "irc.backends",
            "passes": "irc.passes", "tools": "irc.tools", "bench": "bench"}  # fmt: skip

# Top to bottom: a module may import from its own layer and the layers below it.
LAYERS = [
    ("tools", ["irc.tools", "bench"]),
    ("benchmark", ["irc.benchmark"]),
    ("api", ["irc", "irc.compile", "irc.onnx_backend"]),
    ("decision", ["irc.decision"]),
    ("stages", ["irc.stages", "irc.compile_options"]),
    ("run statistics", ["irc.run_statistics"]),
    ("build", ["irc.build"]),
    ("compiled model", ["irc.compiled", "irc.thread_choice"]),
    ("model files", ["irc.serialize", "irc.export_onnx", "irc.export_onnx_ops"]),
    ("backends", ["irc.backends"]),
    ("passes", ["irc.passes", "irc.pass_manager", "irc.pipelines", "irc.support",
                "irc.precision", "irc.report", "irc.stats", "irc.derived_constants"]),
    ("numerics", ["irc.calibration", "irc.gptq", "irc.gptq_columns"]),
    ("frontends", ["irc.frontends", "irc.loader", "irc.zoo", "irc.cli_io"]),
    ("interpreter", ["irc.interpreter", "irc.constant_folding"]),
    ("reference", ["irc.reference"]),
    ("core", ["irc.ir", "irc.types", "irc.tensor", "irc.opdef", "irc.ops", "irc.printer",
              "irc.parser", "irc.verifier", "irc.errors", "irc.registry", "irc.quant",
              "irc.version", "irc.memory_plan", "irc.measure", "irc.specialize",
              "irc.matching"]),
]  # fmt: skip
CIRCLES_ALLOWED = {"core", "frontends"}
MAX_FUNCTION_IMPORTS = 40
# what the generated driver is made of: only the backend and the CompiledModel read these
DRIVER_INTERNALS = {"_driver", "_namespace", "namespace", "_run_range", "run_range",
                    "run_profiled", "kernel_names", "symbols", "program"}  # fmt: skip
DRIVER_OWNERS = ("irc.backends", "irc.compiled", "irc.build")


@dataclass(frozen=True)
class Import:
    """One internal import: who imports what, where, and whether inside a function."""

    module: str
    target: str
    line: int
    in_function: bool
    explained: bool  # a comment on its line or the line above


def module_name(path: Path) -> str:
    """The import name of a source file (``passes/fuse.py`` → ``irc.passes.fuse``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    name = [PACKAGES[parts[0]], *parts[1:]]
    return ".".join(name[:-1] if name[-1] == "__init__" else name)


def sources() -> dict[str, Path]:
    """Every scanned module by import name."""
    found = {}
    for folder in PACKAGES:
        for path in sorted((REPO / folder).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _resolve(name: str, modules: dict) -> str:
    """The scanned module ``name`` means (a name imported from a package is its module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


class _ImportVisitor(ast.NodeVisitor):
    """Collects one file's internal imports, noting those inside a function body."""

    def __init__(self, module: str, path: Path, modules: dict):
        self.module, self.modules = module, modules
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.lines = path.read_text().splitlines()
        self.depth, self.found = 0, []

    def visit_FunctionDef(self, node) -> None:  # noqa: N802 - ast.NodeVisitor's naming
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node) -> None:  # noqa: N802
        self._add(node, [a.name for a in node.names])

    def visit_ImportFrom(self, node) -> None:  # noqa: N802
        base = node.module or ""
        if node.level:
            package = self.package
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        self._add(node, [f"{base}.{a.name}" for a in node.names])

    def _add(self, node, targets: list[str]) -> None:
        above = self.lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        explained = "#" in self.lines[node.lineno - 1] or above.startswith("#")
        for target in targets:
            resolved = _resolve(target, self.modules)
            if resolved and resolved != self.module:
                self.found.append(
                    Import(self.module, resolved, node.lineno, self.depth > 0, explained)
                )


def imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of a scanned module by a scanned module."""
    found = []
    for module, path in modules.items():
        visitor = _ImportVisitor(module, path, modules)
        visitor.visit(ast.parse(path.read_text()))
        found += visitor.found
    return found


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of the layer holding ``module`` (the longest prefix)."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index is None:
        raise AssertionError(f"module {module} is in no layer of LAYERS: add it")
    return index


def wrong_way(found: list[Import]) -> list[str]:
    """The imports that point to a higher layer, as readable lines."""
    return [
        f"{i.module}:{i.line} imports {i.target} ({LAYERS[layer_of(i.module)][0]} → "
        f"{LAYERS[layer_of(i.target)][0]})"
        for i in found
        if layer_of(i.target) < layer_of(i.module)
    ]


def _kernel_name(node: ast.JoinedStr) -> bool:
    """Whether an f-string is ``f"k{...}"``, the driver's name of a kernel call."""
    first = node.values[0] if node.values else None
    return (len(node.values) == 2 and isinstance(first, ast.Constant) and first.value == "k"
            and isinstance(node.values[1], ast.FormattedValue))  # fmt: skip


@pytest.fixture(scope="module")
def scanned():
    modules = sources()
    return modules, imports(modules)


def test_every_module_has_a_layer(scanned):
    modules, _ = scanned
    for module in modules:
        layer_of(module)


def test_no_import_points_up(scanned):
    _, found = scanned
    assert wrong_way(found) == []


def test_a_planted_wrong_way_import_is_caught(scanned):
    """The check can fail: a decision module importing ``irc.compile``, a pass importing
    the backend, or the stages importing the decision, each is reported."""
    _, found = scanned
    planted = [Import("irc.decision.choose", "irc.compile", 1, True, True),
               Import("irc.passes.quantize", "irc.backends.numba.codegen", 1, False, False),
               Import("irc.stages", "irc.decision.api", 1, False, False)]  # fmt: skip
    assert len(wrong_way(found + planted)) == 3


def test_no_circle_outside_the_ir_core_and_the_importer(scanned):
    _, found = scanned
    graph = nx.DiGraph((i.module, i.target) for i in found)
    for circle in nx.strongly_connected_components(graph):
        layers = {LAYERS[layer_of(m)][0] for m in circle}
        if len(circle) > 1:
            assert len(layers) == 1 and layers <= CIRCLES_ALLOWED, sorted(circle)


def test_imports_inside_functions_are_few_and_explained(scanned):
    _, found = scanned
    inside = [i for i in found if i.in_function]
    unexplained = [f"{i.module}:{i.line} ({i.target})" for i in inside if not i.explained]
    assert unexplained == []
    assert len(inside) <= MAX_FUNCTION_IMPORTS


def test_nothing_outside_the_backend_reads_the_driver(scanned):
    modules, _ = scanned
    readers = []
    for module, path in modules.items():
        if module.startswith(DRIVER_OWNERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in DRIVER_INTERNALS:
                readers.append(f"{module}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.JoinedStr) and _kernel_name(node):
                readers.append(f"{module}:{node.lineno} builds a kernel name")
    assert readers == []
