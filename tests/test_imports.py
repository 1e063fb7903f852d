"""Code shape (issue 13): no import cycles among npusim's modules, and npusim's own imports at
module top (a lazy import of another npusim module must name a reason in the module: heavy or
optional third-party libraries only)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PKG = Path(__file__).resolve().parents[1] / "npusim"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(path: Path) -> set[str]:
    """npusim modules imported at module level (outside functions and TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("npusim"):
                out.add(sub.module)
            elif isinstance(sub, ast.Import):
                out.update(a.name for a in sub.names if a.name.startswith("npusim"))
    return out


def test_no_import_cycles_at_module_level():
    g = nx.DiGraph()
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        g.add_node(mod)
        for dep in _top_level_imports(path):
            g.add_edge(mod, dep)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, cycles[:5]


LAYERS = ["config", "workload", "cost", "engine"]


def test_lower_layers_never_import_higher_ones():
    """configs -> workload -> cost -> engine: a module imports only its own layer or lower ones."""
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        parts = mod.split(".")
        if len(parts) < 2 or parts[1] not in LAYERS:
            continue
        mine = LAYERS.index(parts[1])
        for dep in _top_level_imports(path):
            dp = dep.split(".")
            if len(dp) > 1 and dp[1] in LAYERS:
                assert LAYERS.index(dp[1]) <= mine, f"{mod} imports higher layer {dep}"
            elif len(dp) > 1 and dp[1] in ("sweep", "validate", "report", "commands", "cli", "simulate", "api"):
                raise AssertionError(f"{mod} imports {dep}")


def test_no_private_names_imported_across_modules():
    """A module imports only public names from another npusim module (a leading underscore means
    'this module only')."""
    bad = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("npusim"):
                bad += [f"{_module(path)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad
