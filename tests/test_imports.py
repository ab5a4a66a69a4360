"""The package's import graph has no circle, and nothing imports the command layer (cli, pipeline) from below.

Every import counts, at module level or inside a function, except those under ``if TYPE_CHECKING:`` (they never
run). Importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` first, so it depends on their ``__init__``
too, except on the packages that enclose the importing module itself (Python has started those already).
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rnascl_deploy"
# the command layer: these and the cli package's modules
COMMANDS = {"rnascl_deploy.cli", "rnascl_deploy.__main__", "rnascl_deploy.pipeline", "rnascl_deploy.frontier"}


def _command_layer(module: str) -> bool:
    return module in COMMANDS or module.startswith("rnascl_deploy.cli.")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST):
    """Import nodes outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bases = [a.name for a in node.names]
            elif node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                bases = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                bases = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in bases:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # the target and every package above it
                    candidate = ".".join(parts[:i])
                    if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                        targets.add(candidate)
        graph[name] = targets
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_imports_the_command_layer():
    graph = import_graph()
    upward = {m: sorted(filter(_command_layer, t)) for m, t in graph.items()
              if any(map(_command_layer, t)) and not _command_layer(m)}
    assert upward == {}
    assert "rnascl_deploy.recipe" not in graph["rnascl_deploy.space.config"] | graph["rnascl_deploy.space.layout"]
