"""The layering contract: picollm's imports point down the pipeline, and no module imports itself back.

Every `import` / `from ... import` of a picollm module anywhere in a file counts, inside functions too; only
`if TYPE_CHECKING:` blocks are left out (they never run). Tests, bench/ and the root scripts sit above the
package and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "picollm"

#: low -> high. A module may import its own layer and the layers before it. Layers on one line are siblings:
#: neither imports the other. picollm/__init__.py and picollm/__main__.py sit above them all.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("data",),
    ("models",),
    ("config",),
    ("runs",),
    ("train",),
    ("sweep",),
    ("analyze",),
    ("study",),
    ("serve", "experiments"),
    ("cli",),
]
TOP = "picollm"  # the package itself and its __main__
RANK = {layer: rank for rank, siblings in enumerate(LAYERS) for layer in siblings} | {TOP: len(LAYERS)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """picollm.models.xlstm -> models; picollm and picollm.__main__ -> the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else TOP


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, outside `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        stack.extend(children)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from` import names (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported picollm module, line) for every import in `module`'s file. `from pkg import name` counts
    as an import of pkg.name when that is a module, else of pkg."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve(module, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        found += [(target, node.lineno) for target in targets if target == TOP or target.startswith(TOP + ".")]
    return sorted(set(found), key=lambda t: t[1])


GRAPH = {module: imports_of(module) for module in MODULES}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"


def test_imports_point_down_the_layers():
    bad = []
    for module, targets in GRAPH.items():
        here = layer_of(module)
        for target, line in targets:
            there = layer_of(target)
            if there != here and RANK[there] >= RANK[here]:
                kind = "a sibling" if RANK[there] == RANK[here] else "a higher"
                bad.append(f"{_where(module, line)}: {module} (layer {here}) imports {target} "
                           f"({kind} layer, {there})")
    order = " < ".join("=".join(siblings) for siblings in LAYERS)
    assert not bad, (f"{len(bad)} import(s) against the layering {order} (imports point down only):\n"
                     + "\n".join(bad))


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in GRAPH.get(node, []):
            if target not in GRAPH:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return components


def test_no_import_cycles():
    cycles = _cycles()
    lines = []
    for component in cycles:
        members = set(component)
        edges = [f"  {_where(module, line)}: {module} imports {target}"
                 for module in component for target, line in GRAPH[module] if target in members and target != module]
        lines.append(f"cycle between {', '.join(component)}:\n" + "\n".join(edges))
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(lines)


def test_the_checker_sees_imports_inside_functions_and_skips_type_checking():
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from picollm.cli import export\n"
              "def f():\n    from picollm.study import report\n    return report\n")
    nodes = list(_import_nodes(ast.parse(source)))
    assert sorted(n.module for n in nodes) == ["picollm.study", "typing"]
    assert layer_of("picollm.models.xlstm") == "models" and layer_of("picollm.config") == "config"
    assert layer_of("picollm") == TOP and layer_of("picollm.__main__") == TOP


# --------------------------------------------------------------------------------------------------
# imports inside functions
# --------------------------------------------------------------------------------------------------
def _catches_import_error(node: ast.Try) -> bool:
    names = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
    return any("ImportError" in n or "ModuleNotFoundError" in n for n in names)


def _says_why(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import, on an import before it in the same run of imports (blank lines between groups
    allowed), or on the line above that run."""
    if any("#" in line for line in lines[node.lineno - 1:node.end_lineno]):
        return True
    i = node.lineno - 2
    while i >= 0 and (lines[i].strip().startswith(("import ", "from ", ")")) or lines[i].strip().endswith(",")
                      or (not lines[i].strip() and i > 0 and lines[i - 1].strip().startswith(("import ", "from ")))):
        if "#" in lines[i]:
            return True
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def unexplained_function_imports(source: str) -> list[tuple[int, str]]:
    """(line, text) of the imports inside functions that neither say why in a comment nor sit in a `try` that
    catches ImportError (an optional extra). The reasons left for such an import are keeping a heavy library
    (torch, matplotlib, pandas) off a path that does not need it, and an optional extra; a cycle is never one."""
    lines, tree = source.splitlines(), ast.parse(source)
    found = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        guarded = {id(x) for t in ast.walk(fn) if isinstance(t, ast.Try) and _catches_import_error(t)
                   for stmt in t.body for x in ast.walk(stmt)}
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded and not _says_why(lines, node):
                found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def test_every_import_inside_a_function_says_why():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}" for path in MODULES.values()
             for line, text in unexplained_function_imports(path.read_text())]
    assert not found, ("imports inside functions without a comment saying why (move them to the top, or say "
                       "which heavy or optional module they keep off which path):\n" + "\n".join(found))


def test_the_import_check_fires_on_an_unexplained_import_only():
    source = ("def bare():\n    import json\n\n    return json\n\n\n"
              "def commented():\n    # the reason\n    import json\n\n    from os import path\n    return json, path\n\n\n"
              "def optional():\n    try:\n        import yaml\n    except ImportError:\n        return None\n    return yaml\n")
    assert unexplained_function_imports(source) == [(2, "import json")]
