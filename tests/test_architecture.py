"""The layers import in one direction only: memenv <- agents <- algos <- benchmarks.

Every import statement counts (also those inside functions), and so do module paths
written as strings ("agents.embedding:EmbeddingRetriever"), which a registry would import.
At import time (module-level statements) no two modules import each other, directly or
in a cycle.
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
                yield node.value.partition(":")[0], node.lineno, False


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
            if top_level and target in names and target != module and not module.startswith(target + "."):
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
