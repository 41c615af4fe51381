"""The shape of ``src/fleet``: an import graph with no circle, and no module or class too large
to read.

Every module is parsed (never imported) and every ``fleet.`` import it names is an edge: at the
top, inside a function (a lazy import), or under ``if TYPE_CHECKING:``. A type-only circle is a
circle too: two modules that need each other's names are one concern, or share a contract that
belongs in a third module. ``from fleet.pkg import mod`` reads the package's namespace (its
``__init__``, re-exports, a module ``__getattr__``) before it finds the module, so it is an edge to
the package as well; ``import fleet.pkg.mod as mod`` and ``from fleet.pkg.mod import name`` name
the module alone. The whole package's circles are printed on every run; the assertion covers
``SCOPE``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# The package whose modules must import each other in no circle ("fleet": all of it).
SCOPE = "fleet"
# The project's style: about 400 lines a module, 450 at most; a class under 400.
MODULE_LINES_MAX = 450
CLASS_LINES_MAX = 400


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
            # ``from fleet.balancer import pool`` imports the module pool, and reads it from the
            # package's namespace: an edge to both (a package that imports that module back is a
            # circle: its ``__init__`` runs half-way when the module asks for it).
            targets = [base]
            targets += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
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
        "fleet.balancer.protocol", "fleet.balancer", "fleet.balancer.upstream", "fleet.config"}
    # The module itself, not through its package's namespace: no edge to the package.
    module.write_text("import fleet.balancer.upstream as upstream\nfrom fleet.balancer.protocol import X\n")
    assert imports_of(module, "fleet.balancer.m", modules) == {"fleet.balancer.protocol", "fleet.balancer.upstream"}
    assert cycles({"a.x": {"a.y"}, "a.y": {"a.x"}, "a.z": {"a.x"}}, "a") == [["a.x", "a.y"]]


def test_no_import_circle_inside_the_scope() -> None:
    graph = import_graph()
    assert "fleet.balancer.protocol" in graph and graph["fleet.balancer.protocol"]
    for group in cycles(graph, "fleet"):
        print("import circle in src/fleet:", " <-> ".join(group))
    assert cycles(graph, SCOPE) == []


def oversized(root: Path) -> list[str]:
    """Every module of ``root`` over ``MODULE_LINES_MAX`` lines and every class (from its
    ``class`` line to its last) over ``CLASS_LINES_MAX``; the compiled module's C source aside."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(root.parent)
        lines = len(text.splitlines())
        if lines > MODULE_LINES_MAX:
            found.append(f"{where}: {lines} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                size = node.end_lineno - node.lineno + 1
                if size > CLASS_LINES_MAX:
                    found.append(f"{where}: class {node.name} {size} lines")
    return found


def test_the_size_check_sees_long_modules_and_classes(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "small.py").write_text("class A:\n    x = 1\n")
    (package / "long.py").write_text("x = 1\n" * (MODULE_LINES_MAX + 1))
    (package / "big_class.py").write_text("class Big:\n" + "    x = 1\n" * CLASS_LINES_MAX)
    assert oversized(package) == [f"pkg/big_class.py: class Big {CLASS_LINES_MAX + 1} lines",
                                  f"pkg/long.py: {MODULE_LINES_MAX + 1} lines"]


def test_no_module_or_class_over_the_limits() -> None:
    assert oversized(SRC / "fleet") == []
