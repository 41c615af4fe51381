"""The import graph of ``src/fleet`` has no circle where this test says so.

Every module is parsed (never imported) and every ``fleet.`` import it names is an edge: at the
top, inside a function (a lazy import), or under ``if TYPE_CHECKING:``. A type-only circle is a
circle too: two modules that need each other's names are one concern, or share a contract that
belongs in a third module. The whole package's circles are printed on every run; the assertion
covers ``SCOPE`` (widen it to ``"fleet"`` once the package has none).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# The package whose modules must import each other in no circle ("fleet": all of it).
SCOPE = "fleet.balancer"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The fleet modules ``path`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from fleet.balancer import pool`` imports the module pool, not just the package.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]  # fleet.x.Name -> fleet.x
            if target and target != name and target.split(".")[0] == "fleet":
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in sorted((SRC / "fleet").rglob("*.py"))}
    # Compiled modules (``balancer._speedups``) are leaves: they import nothing of fleet.
    compiled = {module_name(path.with_name(path.name.split(".")[0] + ".py"))
                for pattern in ("*.so", "*.c") for path in (SRC / "fleet").rglob(pattern)}
    modules = set(paths) | compiled
    graph = {name: imports_of(path, name, modules) for name, path in paths.items()}
    graph.update((name, set()) for name in compiled - set(paths))
    return graph


def cycles(graph: dict[str, set[str]], scope: str) -> list[list[str]]:
    """Each strongly connected group of more than one module inside ``scope`` (Tarjan)."""
    nodes = [n for n in graph if n == scope or n.startswith(scope + ".")]
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node] & inside):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return sorted(groups)


def test_the_scanner_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from fleet.balancer.protocol import ClientConnection\n"
        "def f():\n    from fleet.balancer import upstream\n    import fleet.config\n")
    modules = {"fleet", "fleet.balancer", "fleet.balancer.protocol", "fleet.balancer.upstream", "fleet.config"}
    assert imports_of(module, "fleet.balancer.m", modules) == {
        "fleet.balancer.protocol", "fleet.balancer.upstream", "fleet.config"}
    assert cycles({"a.x": {"a.y"}, "a.y": {"a.x"}, "a.z": {"a.x"}}, "a") == [["a.x", "a.y"]]


def test_no_import_circle_inside_the_scope() -> None:
    graph = import_graph()
    assert "fleet.balancer.protocol" in graph and graph["fleet.balancer.protocol"]
    for group in cycles(graph, "fleet"):
        print("import circle in src/fleet:", " <-> ".join(group))
    assert cycles(graph, SCOPE) == []
