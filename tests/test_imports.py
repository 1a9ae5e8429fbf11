"""The package's import graph, read from its source (every import, at module level or inside a
function): no cycle, no core module that imports names from the package's ``__init__``, and
monitoring that does not reach into serving."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_lab"
#: The faces: thin layers over the core, which may use the public ``mlops_lab`` namespace.
FACES = {"mlops_lab", "mlops_lab.magics", "mlops_lab.widgets", "mlops_lab.cli", "mlops_lab.server",
         "mlops_lab.server.app", "mlops_lab.server.handlers"}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> modules it imports; module -> names it takes from the top-level package."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    from_top: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # imports only type checkers see do not run
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        pkg = mod if is_pkg else mod.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != mod:
                        graph[mod].add(alias.name)
                        if alias.name == "mlops_lab":
                            from_top[mod].add("*")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:  # `from pkg import submodule`: an edge to the submodule only
                        if sub != mod:
                            graph[mod].add(sub)
                    elif target in mods and target != mod:
                        graph[mod].add(target)
                        if target == "mlops_lab":
                            from_top[mod].add(alias.name)
    return graph, from_top


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_it_is_given():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph, _ = import_graph()
    core = {m: deps - {"mlops_lab"} for m, deps in graph.items()}  # every face reaches the core through it
    assert cycles(core) == [], "break these cycles"
    assert "mlops_lab.deployers.api" not in graph["mlops_lab.deployers.base"]
    assert "mlops_lab.registry.api" not in graph["mlops_lab.registry.entities"]


def test_no_core_module_takes_names_from_the_package_init():
    _, from_top = import_graph()
    offenders = {m: names for m, names in from_top.items() if names and m not in FACES}
    assert offenders == {}


def test_monitoring_does_not_reach_into_serving():
    graph, _ = import_graph()
    reaching = {m: sorted(d for d in deps if d.startswith("mlops_lab.serving"))
                for m, deps in graph.items() if m.startswith("mlops_lab.monitoring")}
    assert {m: d for m, d in reaching.items() if d} == {}
