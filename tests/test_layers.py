"""The packages' layers: every import, lazy ones inside functions included, points down (or within
its own layer), and no module imports itself back through others.

Read from the source alone, so a new module is checked without being listed: its layer is that of
its package (or of the top-level ``mgkd`` module it is)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top; a module may import from its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("mgkd.errors", "mgkd.io", "mgkd.numpy_pickle", "mgkd.paths", "mgkd.timing"),  # helpers (and the package itself, just a docstring)
    ("mgkd.catalog",),  # what exists and its defaults, torch-free
    ("mgkd.config",),  # the experiment config and the sweep file, torch-free
    ("mgkd.data", "mgkd.models", "mgkd.reid", "mgkd.methods"),  # torch building blocks
    ("mgkd.training",),  # the Trainer, steps, tasks, callbacks
    ("mgkd.knowledge",),  # teachers, granularity heads, prepared knowledge
    ("mgkd.distill",),  # the distillation loss, learner and trainer
    ("mgkd.runner", "mgkd.probe"),  # standalone runs; analyses of trained models
    ("mgkd.cli",),  # the core subcommands
    ("spaces",),
    ("analysis",),
    ("trainables",),
    ("search",),
    ("bench",),
)
PACKAGES = ("mgkd", "spaces", "analysis", "trainables", "search", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def layer_of(module: str) -> int:
    if module == "mgkd":
        return 0
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def known(name: str) -> str | None:
    """The project module ``name`` is (or lies in): ``mgkd.data.Batch`` -> ``mgkd.data``."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {target for target in map(known, names) if target and target != module}
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up_a_layer(module):
    mine = layer_of(module)
    upward = sorted(target for target in GRAPH[module] if layer_of(target) > mine)
    assert not upward, f"{module} (layer {mine}) imports {upward} from a layer above"


def test_no_module_imports_itself_back():
    done, on_path, circles = set(), [], []

    def visit(module: str) -> None:
        on_path.append(module)
        for target in sorted(GRAPH[module]):
            if target in on_path:
                circles.append(on_path[on_path.index(target):] + [target])
            elif target not in done:
                visit(target)
        on_path.pop()
        done.add(module)

    for module in sorted(MODULES):
        if module not in done:
            visit(module)
    assert not circles, "\n".join(" -> ".join(circle) for circle in circles)


def test_the_checks_see_a_hidden_upward_import():
    # What the checks read: a lazy import inside a function counts like one at the top.
    source = "def load():\n    from search.sweep import plan\n    return plan\n"
    names = [node.module for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.ImportFrom)]
    assert [layer_of(known(n)) > layer_of("analysis.rundir") for n in names] == [True]
