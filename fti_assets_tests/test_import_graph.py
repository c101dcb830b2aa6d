"""The import graph of ``fti_assets``: the online service starts without the asset graph, the pipelines stay
independent (DESIGN.md, "Independence rule"), and no module imports itself through others.

The graph is read from the source with ``ast``: every ``import`` of an ``fti_assets`` module, at module level
or inside a function (a deferred import still runs when the function does, so it is a dependency and can
close a cycle), except those under ``if TYPE_CHECKING:`` (never run). An import of a submodule is an edge to
that submodule only, not to the packages above it: Python imports a submodule of a package that is still
initialising without trouble, so those implicit edges cannot deadlock an import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from fti_assets.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "fti_assets"

# (importer prefix, imported prefix): no module under the first imports one under the second.
FORBIDDEN = [
    ("fti_assets.training", "fti_assets.ingestion"),
    ("fti_assets.inference", "fti_assets.training"),
    ("fti_assets.serving", "fti_assets.training"),
    ("fti_assets.features", "fti_assets.ingestion"),
    ("fti_assets.features", "fti_assets.training"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST, module: str, is_package: bool):
    """Dotted names each import statement of the module brings in, skipping ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 more
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)
        if _type_checking_only(node):
            stack.extend(node.orelse)  # the TYPE_CHECKING branch never runs
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """fti_assets module -> the fti_assets modules it imports."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for name in imported_names(tree, module, path.name == "__init__.py"):
            # `from package import name` names a submodule or an attribute: the nearest module above it.
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        for importer, imported in FORBIDDEN
        if under(module, importer) and under(target, imported)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_service_starts_without_the_asset_graph_or_the_pipelines(tmp_path):
    """A fresh interpreter imports the service, builds its settings from the project settings and creates the
    app: none of definitions, the training or ingestion code, or any asset, check or sensor module is loaded."""
    code = f"""
import json, sys
from fti_assets.serving.app import create_app
from fti_assets.serving.settings import ServiceSettings
from fti_assets.settings import load_settings
app = create_app(ServiceSettings.from_project(load_settings(data_dir={str(tmp_path)!r})))
assert app.routes
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fti_assets"))))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "fti_assets.serving.app" in loaded and "fti_assets.serving.settings" in loaded
    forbidden = [
        m
        for m in loaded
        if m == "fti_assets.definitions"
        or under(m, "fti_assets.training")
        or under(m, "fti_assets.ingestion")
        or m.rpartition(".")[2] in ("assets", "checks", "sensors")
    ]
    assert forbidden == []


def test_the_pipelines_import_each_other_only_as_the_independence_rule_allows():
    graph = import_graph()
    assert "fti_assets.serving.app" in graph and "fti_assets.training.rollback" in graph  # the graph is read
    assert violations(graph) == []


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert cycles(graph) == []


def test_the_checks_see_a_violation_and_a_cycle():
    """The two checks above on a graph that breaks both rules (so a pass above is not a blind spot)."""
    graph = {
        "fti_assets.serving.app": {"fti_assets.training.models"},
        "fti_assets.training.models": {"fti_assets.definitions"},
        "fti_assets.definitions": {"fti_assets.serving.app"},
    }
    assert cycles(graph) == [sorted(graph)]
    assert violations(graph) == ["fti_assets.serving.app imports fti_assets.training.models"]
