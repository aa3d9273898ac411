"""The layering holds in the source: fedkit's imports (lazy ones included) form no cycle and
never reach the suites or experiments; the suites never import experiments or paper."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITES = ("privacy", "attacks", "chaos")
TOP = ("experiments", "paper")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, lazy: bool) -> set[str]:
    """Modules ``path`` imports: at module level, and inside functions too when ``lazy``
    (never under ``if TYPE_CHECKING``: those are for type checkers only)."""
    out: set[str] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
            inner = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if inner and (lazy or not is_def):
                walk(inner)

    walk(ast.parse(path.read_text()).body)
    return out


def graph(package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports, lazily or not."""
    modules = {module_name(p): p for p in (REPO / package).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        edges[name] = {m for m in imports(path, lazy=True) if m in modules and m != name}
    return edges


def test_fedkit_never_imports_the_suites_or_experiments():
    for path in (REPO / "fedkit").rglob("*.py"):
        bad = {m for m in imports(path, lazy=True) if m.split(".")[0] in (*SUITES, *TOP)}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_suites_never_import_experiments_or_paper():
    for suite in SUITES:
        for path in (REPO / suite).rglob("*.py"):
            bad = {m for m in imports(path, lazy=True) if m.split(".")[0] in TOP}
            assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_fedkits_import_graph_has_no_cycle():
    edges = graph("fedkit")
    # a package's __init__ re-exporting its submodules is not a cycle through the package
    for name in list(edges):
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_a_private_module_is_imported_only_from_its_own_package():
    """``a.b._c`` is ``a.b``'s business: code outside ``a.b`` imports what ``a.b`` or a
    public module exports (the shared row helpers live in ``fedkit.core.rows`` for that)."""
    bad = []
    for package in ("fedkit", *SUITES, *TOP):
        for path in (REPO / package).rglob("*.py"):
            me = module_name(path)
            for m in imports(path, lazy=True):
                parts = m.split(".")
                private = [
                    i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")
                ]
                if not private or parts[0] not in ("fedkit", *SUITES, *TOP):
                    continue
                owner = ".".join(parts[: private[0]])
                if not (me == owner or me.startswith(owner + ".")):
                    bad.append(f"{path.relative_to(REPO)} imports {m}")
    assert not bad, "\n".join(sorted(set(bad)))
