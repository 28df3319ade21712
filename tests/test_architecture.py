"""The layers import in one direction only: memenv <- agents <- algos <- benchmarks.

Every import statement counts (also those inside functions), and so do module paths
written as strings ("agents.embedding:EmbeddingRetriever"), which a registry would import.
At import time (module-level statements) no two modules import each other, directly or
in a cycle; and no project modules import each other in a cycle through any import
statement, those inside functions included (a deferred import hides a cycle from Python,
not from the design).
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("memenv", "agents", "algos", "benchmarks")
STRING_IMPORT = re.compile(r"^(memenv|agents|algos|benchmarks)(\.[A-Za-z_][\w.]*)?(:[\w.]+)?$")


def _modules():
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield layer, name.removesuffix(".__init__"), path


def _imports(path: Path, module: str):
    """(imported module, line, module level?) for every import and string module path."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            yield base, node.lineno, id(node) in top
            for alias in node.names:  # "from agents import lora" imports agents.lora
                yield f"{base}.{alias.name}", node.lineno, id(node) in top
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and STRING_IMPORT.match(node.value):
            if ":" in node.value:
                yield node.value.partition(":")[0], node.lineno, None  # None: a string module path


def test_no_layer_imports_a_layer_above_it():
    wrong = []
    for layer, module, path in _modules():
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for target, line, _ in _imports(path, module):
            top = target.split(".")[0]
            if top in LAYERS and top not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


def test_no_import_cycles_at_import_time():
    names = {module for _, module, _ in _modules()}
    graph = {module: set() for module in names}
    for _, module, path in _modules():
        for target, _, top_level in _imports(path, module):
            # a module importing its own parent package (``from memenv import constants``) is no cycle
            if top_level is True and target in names and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert cycles == []


def _find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (each a cycle or several), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports anywhere in its file.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module and ``a.b``
    otherwise (the longest project module the path names). A module importing its own parent
    package is no edge (Python runs the package first whatever the child does), and module
    paths written as strings are left out: they are plugin registries'
    (``memenv.sources``, ``agents.registry``), resolved at call time, and a plugin that
    registers in, or builds through, its registry is that pattern, not a cycle. The layer
    test above counts them.
    """
    names = {module for _, module, _ in _modules()}
    graph: dict[str, set[str]] = {module: set() for module in names}
    for _, module, path in _modules():
        for target, _, kind in _imports(path, module):
            if kind is None:
                continue
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def test_no_import_cycles_anywhere_among_project_modules():
    assert _find_cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert _find_cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert _find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_two_former_cycles_stay_broken():
    """algos.build <-> algos.sft (default_threads) and memenv.synthetic.world <-> .hard
    (the hard builder is registered, not imported by the world module)."""
    graph = import_graph()
    assert "algos.build" not in graph["algos.sft"] and "algos.threads" in graph["algos.sft"]
    assert "memenv.synthetic.hard" not in graph["memenv.synthetic.world"]
    assert "memenv.synthetic.world" in graph["memenv.synthetic.hard"]


def test_hard_worlds_are_drawn_through_the_builder_registry():
    from memenv.synthetic.hard import HardWorldBuilder
    from memenv.synthetic.world import DIFFICULTIES, WORLD_BUILDERS, generate_world

    assert set(WORLD_BUILDERS) == set(DIFFICULTIES) and WORLD_BUILDERS["hard"] is HardWorldBuilder
    assert "memory_budget" in generate_world(0, 2, "hard").extra
