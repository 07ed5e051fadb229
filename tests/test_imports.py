"""No module of setseq imports a module that imports it back, directly or through others.

The import graph is read from the source with `ast`, every import statement counted, those inside
functions (lazy imports of optional parts) included. An edge runs from a module to each module it
names: `import setseq.a.b` and `from setseq.a import b` (b a module) reach `setseq.a.b`;
`from setseq.a import f` (f a name) reaches the package `setseq.a`, that is its `__init__`. Relative
imports are resolved against the importing module's package. Importing `setseq.a.b` also runs
`setseq.a`'s `__init__`, so that edge is counted too ("through a folder"), except from a module
inside `setseq.a`, whose own import already ran that `__init__`.

Every module is checked, `setseq.toy`, `setseq.toylab` and `setseq.backbones.toy` included: no cycle
ran through them when this test was written (2026-11-30), so none was left out.
"""

import ast
from pathlib import Path

import setseq

ROOT = Path(setseq.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the setseq modules it imports}, packages named by their own name (their __init__)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)

    def existing(name: str) -> str | None:  # the longest prefix that is a module of setseq
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x, from ..a import x
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                target = existing(target) if target.split(".")[0] == "setseq" else None
                if target is None:
                    continue
                # importing a.b.c runs a's and a.b's __init__ on the way, unless this module is inside them
                parts = target.split(".")
                edges |= {".".join(parts[:i]) for i in range(1, len(parts))} - ancestors
                edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_reader_sees_imports_and_cycles(tmp_path):
    """The checker itself: relative, absolute, lazy and package imports become edges, and a cycle is found."""
    pkg = tmp_path / "setseq"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from setseq.sub import helper\n")
    (pkg / "sub" / "__init__.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "sub" / "helper.py").write_text("from . import other\nimport setseq.b\n")
    (pkg / "sub" / "other.py").write_text("")
    (pkg / "b.py").write_text("from setseq.sub.other import y\n")
    graph = import_graph(pkg)
    assert graph["setseq.a"] == {"setseq.sub", "setseq.sub.helper"}
    assert graph["setseq.sub"] == {"setseq.a"}
    assert graph["setseq.sub.helper"] == {"setseq.sub.other", "setseq.b"}
    assert graph["setseq.b"] == {"setseq.sub", "setseq.sub.other"}  # through the folder sub
    assert find_cycle(graph) is not None  # a -> sub (its __init__) -> a
    (pkg / "sub" / "__init__.py").write_text("")
    assert find_cycle(import_graph(pkg)) is None


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph()
    assert "setseq.backbones.wan" in graph and "setseq.toy.dit" in graph
    assert "setseq.backbones.base" in graph["setseq.backbones.wan"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
