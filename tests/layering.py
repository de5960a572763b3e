"""The package's layering as a rule a test can check (tests/test_layering.py), read from the source
with ``ast``: nothing is imported.

Every import statement counts, wherever it stands (module level, inside a function or a class, under
``try`` or ``if``), and relative imports are resolved to absolute module names. An import names the
module it loads: ``from .core.gauge import x`` imports ``gaugelit.core.gauge``; ``from . import claims``
imports the submodule ``claims`` when there is one, and the package itself (its ``__init__``) when the
name is defined there; ``import a.b`` imports ``a.b``. The parent packages Python initialises on the
way are not counted (every module would otherwise import the face ``gaugelit/__init__.py``).

The layers, bottom to top, and who may import whom:

- layer 0: ``gaugelit._version`` and ``gaugelit.core``; 1: ``gaugelit.solvers``; 2: ``gaugelit.training``;
  3: ``gaugelit.experiments``. A module of layer k imports gaugelit modules of layers <= k only.
- leaves: ``gaugelit.torch``, ``gaugelit.symbolic`` and ``gaugelit.torch_training`` (which takes
  ``gaugelit.torch`` as an argument) may import any layer; no layer module imports a
  leaf, and no leaf imports another leaf.
- top: the face ``gaugelit`` (``__init__.py``) and the command line ``gaugelit.__main__`` may import
  anything. Nothing imports ``gaugelit.__main__``, and no layer or leaf module imports the face.
- every gaugelit module belongs to one of these (a new top-level module must be given a place).
- no import cycle among gaugelit's modules (a package's ``__init__`` importing its own modules is an
  edge like any other, so a module importing a name from its own package's ``__init__`` closes a cycle).
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "gaugelit"
#: subpackage or module (relative to the package) -> layer
LAYERS = {"_version": 0, "core": 0, "solvers": 1, "training": 2, "experiments": 3}
LAYER_NAMES = {0: "core", 1: "solvers", 2: "training", 3: "experiments"}
LEAVES = ("torch", "symbolic", "torch_training")
MAIN = "__main__"


@dataclass(frozen=True)
class Edge:
    source: str          # importing module, e.g. gaugelit.solvers._chain
    target: str          # imported gaugelit module, e.g. gaugelit.core.gauge
    path: str            # file of the importing module, relative to the tree's root
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Violation:
    rule: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


def read_tree(root: Path, package: str = PACKAGE) -> dict[str, str]:
    """The package's sources: path relative to ``root`` (posix) -> text."""
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted((root / package).rglob("*.py"))}


def module_name(path: str) -> tuple[str, bool]:
    """``gaugelit/core/gauge.py`` -> (``gaugelit.core.gauge``, False); ``.../__init__.py`` -> (package, True)."""
    parts = path[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(base) - 1:
        raise ValueError(f"relative import beyond the top package in {module}")
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def edges_of(path: str, source: str, modules: set[str], package: str = PACKAGE) -> list[Edge]:
    """Every import of a gaugelit module in one file (at any depth), resolved."""
    module, is_package = module_name(path)
    tree = ast.parse(source, filename=path)
    out = []

    def inside(name):
        return name == package or name.startswith(package + ".")

    def add(target, node):
        edge = Edge(module, target, path, node.lineno)
        if inside(target) and edge not in out:
            out.append(edge)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = resolve(module, is_package, node.level, node.module)
            if not inside(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if alias.name != "*" and sub in modules else base, node)
    return out


def place(module: str, package: str = PACKAGE):
    """("layer", k) | ("leaf", name) | ("face", None) | ("main", None) | (None, None) for a gaugelit module."""
    if module == package:
        return "face", None
    first = module[len(package) + 1:].split(".")[0]
    if first == MAIN:
        return "main", None
    if first in LEAVES:
        return "leaf", first
    if first in LAYERS:
        return "layer", LAYERS[first]
    return None, None


def describe(module: str, package: str = PACKAGE) -> str:
    kind, where = place(module, package)
    if kind == "layer":
        return f"{module} (layer {where}, {LAYER_NAMES[where]})"
    if kind == "leaf":
        return f"{module} (leaf)"
    if kind == "face":
        return f"{module} (the face, gaugelit/__init__.py)"
    return module


def layer_violations(edges: list[Edge], package: str = PACKAGE) -> list[Violation]:
    out = []
    for e in edges:
        src, dst = place(e.source, package), place(e.target, package)
        msg = f"{describe(e.source, package)} imports {describe(e.target, package)}"
        if dst[0] is None:
            out.append(Violation("unplaced", e.path, e.line, f"{msg}, which is in no layer"))
        elif dst[0] == "main":
            out.append(Violation("imports-main", e.path, e.line, f"{msg}: nothing imports the command line"))
        elif src[0] in ("face", "main"):
            continue
        elif dst[0] == "face":
            out.append(Violation("imports-face", e.path, e.line,
                                 f"{msg}: only the command line may import the face; import from the layer"))
        elif src[0] == "layer" and dst[0] == "leaf":
            out.append(Violation("imports-leaf", e.path, e.line, f"{msg}: no layer imports a leaf"))
        elif src[0] == "leaf" and dst[0] == "leaf" and src[1] != dst[1]:
            out.append(Violation("leaf-imports-leaf", e.path, e.line, f"{msg}: no leaf imports another"))
        elif src[0] == "layer" and dst[0] == "layer" and dst[1] > src[1]:
            out.append(Violation("upward", e.path, e.line, f"{msg}: a layer imports only layers at or below it"))
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components (iterative), those with more than one module or a self-import."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1 or node in graph[node]:
                        out.append(sorted(comp))
    return out


def shortest_cycle(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """start -> ... -> start, the fewest edges, within one component."""
    prev, queue = {}, deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if child not in prev:
                prev[child] = node
                queue.append(child)
    raise AssertionError("no cycle through a member of a strongly connected component")


def cycle_violations(edges: list[Edge]) -> list[Violation]:
    graph: dict[str, set[str]] = {}
    first: dict[tuple[str, str], Edge] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
        key = (e.source, e.target)
        if key not in first or e.line < first[key].line:
            first[key] = e
    out = []
    for comp in strongly_connected(graph):
        cycle = shortest_cycle(comp[0], graph, set(comp))
        steps = [first[(a, b)] for a, b in zip(cycle[:-1], cycle[1:], strict=True)]
        chain = "; ".join(f"{s.source} imports {s.target} ({s.where()})" for s in steps)
        extra = f" (the cycle's component: {', '.join(comp)})" if len(comp) > len(steps) else ""
        out.append(Violation("cycle", steps[0].path, steps[0].line, f"import cycle: {chain}{extra}"))
    return out


def check(sources: dict[str, str], package: str = PACKAGE) -> list[Violation]:
    """Every violation of the layering in ``sources`` (path relative to the root -> text)."""
    modules = {module_name(path)[0] for path in sources}
    edges = [e for path, text in sorted(sources.items()) for e in edges_of(path, text, modules, package)]
    out = []
    for module in sorted(modules):
        if place(module, package)[0] is None:
            path = next(p for p in sources if module_name(p)[0] == module)
            out.append(Violation("unplaced", path, 1, f"{module} is in no layer (add it to tests/layering.py)"))
    return out + layer_violations(edges, package) + cycle_violations(edges)
