"""Derive the public names of CuPy's namespaces that the stand-in mimics, from CuPy's own source.

Usage (a clone of https://github.com/cupy/cupy, any checkout; the tag is read with git show)::

    python tests/cupy_standin/derive_names.py /path/to/cupy.git v14.0.0 > tests/cupy_standin/cupy14_names.txt

Modules (``cupy``, ``cupy.linalg``, ``cupy.random``, ``cupy.cuda``) are read from their
``__init__.py`` with :mod:`ast`: every name bound at module level (imports, assignments, defs,
classes, in any branch of a module-level ``if``/``try``), and the names a module ``__getattr__``
answers (``key == 'Generator'``). ``from __future__`` imports and names starting with ``_`` are
left out. Cython modules and classes (``cupy.cuda.runtime``, ``cupy.ndarray``,
``cupy.random.Generator``, ``cupy.cuda.Device``, ``cupy.cuda.Stream``) are read from their
``.pyx``/``.pxd`` text: ``def``/``cpdef`` functions and methods, ``property`` blocks, ``readonly``
and ``public`` attributes, ``Class.name = ...`` assignments, base classes in the same file.
Standard library only; the output is sorted, one section per namespace.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys

MODULES = {
    "cupy": "cupy/__init__.py",
    "cupy.linalg": "cupy/linalg/__init__.py",
    "cupy.random": "cupy/random/__init__.py",
    "cupy.cuda": "cupy/cuda/__init__.py",
}
# namespace: (source files, class names whose bodies count; None: the module's top level)
CYTHON = {
    "cupy.cuda.runtime": (["cupy_backends/cuda/api/runtime.pyx"], None),
    "cupy.ndarray": (["cupy/_core/core.pyx", "cupy/_core/core.pxd"], ["_ndarray_base", "ndarray"]),
    "cupy.random.Generator": (["cupy/random/_generator_api.pyx"], ["Generator"]),
    "cupy.cuda.Device": (["cupy/cuda/device.pyx", "cupy/cuda/device.pxd"], ["Device"]),
    "cupy.cuda.Stream": (["cupy/cuda/stream.pyx"], ["_BaseStream", "Stream"]),
}


def show(repo: str, rev: str, path: str) -> str:
    try:
        return subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout
    except subprocess.CalledProcessError:
        return ""                                   # a .pxd that the tag does not have


def module_names(source: str) -> set[str]:
    names: set[str] = set()

    def bind(target):
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                bind(t)

    def walk(body):
        for node in body:
            if isinstance(node, ast.ImportFrom):
                if node.module == "__future__":
                    continue
                names.update(a.asname or a.name for a in node.names if a.name != "*")
            elif isinstance(node, ast.Import):
                names.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
                if node.name == "__getattr__":      # lazily answered names: key == 'name'
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Compare) and all(isinstance(op, ast.Eq) for op in sub.ops):
                            for c in [sub.left] + sub.comparators:
                                if isinstance(c, ast.Constant) and isinstance(c.value, str):
                                    names.add(c.value)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    bind(t)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                bind(node.target)
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for h in node.handlers:
                    walk(h.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, ast.With):
                walk(node.body)

    walk(ast.parse(source).body)
    return {n for n in names if not n.startswith("_")}


_DEF = re.compile(r"^(\s*)(?:async\s+)?(?:cpdef|def)\s+(?:[\w.\[\], ]+?\s+)?(\w+)\s*\(")
_PROP = re.compile(r"^(\s*)property\s+(\w+)\s*:")
_ATTR = re.compile(r"^\s+(?:cdef\s+)?(?:readonly|public)\s+[\w.\[\]]+\s+(\w+)")
_ATTR_CONT = re.compile(r"^\s+(?:readonly|public)\s+[\w.\[\]]+\s+(\w+)")
_CLASS = re.compile(r"^(?:cdef\s+)?class\s+(\w+)")
_SETATTR = re.compile(r"^(\w+)\.(\w+)\s*=")


def cython_names(sources: list[str], classes: list[str] | None) -> set[str]:
    names: set[str] = set()
    for text in sources:
        current = None                             # the class whose body the line is in
        for line in text.splitlines():
            if line.strip() == "" or line.lstrip().startswith("#"):
                continue
            indent = len(line) - len(line.lstrip())
            m = _CLASS.match(line)
            if m:
                current = m.group(1)
                continue
            if indent == 0:
                current = None
                s = _SETATTR.match(line)
                if s and classes and s.group(1) in classes:
                    names.add(s.group(2))
            if classes is None:
                m = _DEF.match(line)
                if indent == 0 and m:
                    names.add(m.group(2))
                continue
            if current not in classes or indent != 4:
                if current in classes and indent == 8:
                    m = _ATTR_CONT.match(line)     # continuation of a `cdef:` / `cdef readonly:` block
                    if m:
                        names.add(m.group(1))
                continue
            for pattern in (_DEF, _PROP):
                m = pattern.match(line)
                if m:
                    names.add(m.group(2))
            m = _ATTR.match(line)
            if m:
                names.add(m.group(1))
    return {n for n in names if not n.startswith("_")}


def main(repo: str, rev: str) -> None:
    commit = subprocess.run(["git", "-C", repo, "rev-parse", f"{rev}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    print(f"# Public names of CuPy {rev} (commit {commit}), derived from CuPy's own source")
    print(f"# by: python tests/cupy_standin/derive_names.py <cupy clone> {rev} > tests/cupy_standin/cupy14_names.txt")
    print("# (modules: their __init__.py; Cython modules and classes: their .pyx/.pxd). Do not edit by hand.")
    for ns, path in MODULES.items():
        print(f"[{ns}]")
        for n in sorted(module_names(show(repo, rev, path))):
            print(n)
    for ns, (paths, classes) in CYTHON.items():
        print(f"[{ns}]")
        for n in sorted(cython_names([show(repo, rev, p) for p in paths], classes)):
            print(n)


if __name__ == "__main__":
    main(*sys.argv[1:3])
