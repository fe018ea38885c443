"""worker/nn imports numpy, the standard library and itself only."""
import ast
import sys
from pathlib import Path

import worker.nn

PACKAGE = Path(worker.nn.__file__).parent
ALLOWED_THIRD_PARTY = {"numpy"}


def imported_roots(source: str) -> set[tuple[str, int]]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update((alias.name.split(".")[0], 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(((node.module or "").split(".")[0], node.level))
    return roots


def test_every_module_imports_only_numpy_stdlib_or_relative():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 5
    offenders = []
    for path in modules:
        for root, level in imported_roots(path.read_text()):
            if level > 0:
                continue  # relative import inside the package
            if root in ALLOWED_THIRD_PARTY or root in sys.stdlib_module_names or root == "__future__":
                continue
            offenders.append(f"{path.name}: {root}")
    assert offenders == []


def test_the_checker_catches_a_foreign_import():
    roots = imported_roots("import torch\nfrom sklearn.neural_network import MLPClassifier\nfrom . import x\n")
    assert ("torch", 0) in roots and ("sklearn", 0) in roots and ("", 1) in roots
