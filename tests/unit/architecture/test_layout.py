"""The package's shape: no import cycle between mtbert's modules, nothing imports upward, short training functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "mtbert"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """mtbert modules a file imports anywhere (top level or inside functions), resolved to modules."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for block in ast.walk(tree):  # imports only for type checkers never run
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        found |= {n for n in names if n == "mtbert" or n.startswith("mtbert.")}
    return found


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        targets = set()
        for target in imports_of(path):
            while target not in MODULES and "." in target:  # `import mtbert.data.files` names a module
                target = target.rsplit(".", 1)[0]
            if target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == "mtbert":  # the root's lazy names
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_nothing_imports_upward():
    """Only the entry points import the command line; no module imports the package root's lazy names."""
    for name, targets in graph().items():
        if name not in ("mtbert.__main__",):
            assert "mtbert.cli" not in targets, f"{name} imports mtbert.cli"
        if name != "mtbert":
            assert "mtbert" not in targets, f"{name} imports the package root"


def test_subpackage_leaves_import_no_training_or_commands():
    """The shared leaves and the lower subpackages do not depend on training, evaluation or the benchmarks."""
    lower = ("mtbert.errors", "mtbert.io", "mtbert.tasks", "mtbert.config", "mtbert.distributed", "mtbert.data",
             "mtbert.model", "mtbert.methods", "mtbert.runs")
    upper = ("mtbert.training", "mtbert.evaluation", "mtbert.bench", "mtbert.integrations")
    for name, targets in graph().items():
        if name.startswith(lower):
            bad = sorted(t for t in targets if t.startswith(upper))
            assert not bad, f"{name} imports {bad}"


def test_the_config_imports_no_training_method():
    """The run config is data: it names the methods and trackers but imports neither the methods nor training."""
    targets = graph()["mtbert.config"]
    assert not [t for t in targets if t.startswith(("mtbert.methods", "mtbert.training"))], targets


def test_no_function_in_the_training_subpackage_is_over_80_lines():
    for path in sorted((SRC / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.name}: {node.name} is {length} lines"


def test_the_training_loop_reads_in_one_sitting():
    import inspect

    from mtbert.training.stage import Stage

    assert len(inspect.getsource(Stage.run).splitlines()) < 50
