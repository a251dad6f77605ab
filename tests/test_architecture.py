"""The package's shape: stages that import only earlier stages, no import cycles, a lean refresher child."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "feedproxy"
# Each module's stage: a module may import its own stage and earlier ones, never a later one.
STAGES = ("base", "upstream", "store", "search", "render", "http", "entry")
BASE = {"feedproxy", "feedproxy.errors", "feedproxy.heap", "feedproxy.logs", "feedproxy.numbers"}
ENTRY = {"feedproxy.config", "feedproxy.wiring", "feedproxy.app", "feedproxy.cli", "feedproxy.refresher",
         "feedproxy.notify"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every feedproxy module ``path`` imports, at the top or inside a function, relative or absolute."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return imported(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules)


def imported(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found.add(target)
            # `from feedproxy.http import metrics` imports the module feedproxy.http.metrics
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def stage(module: str) -> int:
    if module in BASE:
        return 0
    if module in ENTRY:
        return len(STAGES) - 1
    return STAGES.index(module.split(".")[1])


def test_every_module_belongs_to_a_stage():
    for module in graph():
        assert module in BASE | ENTRY or module.split(".")[1] in STAGES[1:-1], module


def test_each_stage_imports_only_earlier_stages():
    wrong = [(m, i) for m, imported in graph().items() for i in imported
             if stage(i) > stage(m) and not (m == "feedproxy" or i.startswith(m + "."))]
    assert wrong == []


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the graph as a list of modules, or None (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if node not in colour and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_not_even_through_function_local_imports():
    # A package's __init__ is imported by its modules implicitly; only its own imports count.
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_a_function_local_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_are_seen():
    source = "import os\ndef f():\n    from ..http import views\n    from feedproxy.render.formats import FORMATS\n"
    modules = {"feedproxy.http.views", "feedproxy.render.formats", "feedproxy.store.x"}
    assert imported(source, "feedproxy.store.x", False, modules) == {"feedproxy.http.views", "feedproxy.render.formats"}


def test_the_refresher_child_imports_neither_flask_nor_the_metrics():
    code = ("import sys, feedproxy.refresher; "
            "print(sorted(m for m in ('flask', 'prometheus_client', 'feedproxy.http') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
