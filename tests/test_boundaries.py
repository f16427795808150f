"""The house rules of the layout, read statically from the source (ast, nothing imported).

- no import circle between modules of app/, directly or around a loop, counting the imports
  made inside functions (a lazy import hides a circle, it does not remove it) and those under
  `if TYPE_CHECKING:` (a module that needs another's types to be read depends on it: a callback
  into the caller typed that way is a circle too);
- app/ml imports neither the HTTP layer, the services, the database, FastAPI, Celery nor
  SQLAlchemy: it is pure ML, usable from a notebook;
- app/api imports no torch at module level: the API starts fast and loads torch only with a model;
- pretrainer_client imports nothing of the server.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module (or the package a name was taken from), dotted
    top_level: bool  # run when the module is imported, not only when a function is called
    line: int


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


def _exists(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, top_level: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, with whether it runs when the module is imported (not inside a function, not
    under `if TYPE_CHECKING:`)."""
    for child in ast.iter_child_nodes(node):
        inner = top_level and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                             | ast.Lambda)
        if isinstance(child, ast.If) and _type_checking(child):
            inner = False
        yield child, inner
        yield from _walk(child, inner)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".")
    # `from app.ml import registry` imports the module app.ml.registry, not only app.ml.
    subs = [f"{base}.{a.name}" for a in node.names if _exists(f"{base}.{a.name}")]
    return subs if len(subs) == len(node.names) else [base, *subs]


def imports(package: str, root: Path = ROOT) -> list[Import]:
    """Every import statement in the package's source files."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, top in _walk(tree, True):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found += [Import(module, t, top, node.lineno) for t in _targets(module, node)]
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circle_in_app():
    edges: dict[str, set[str]] = {}
    for imp in imports("app"):
        if _within(imp.target, ("app",)) and imp.target != imp.module:
            edges.setdefault(imp.module, set()).add(imp.target)
    circles = [" -> ".join(c) for c in _cycles(edges)]
    assert circles == [], "modules that import each other, directly or around a loop"


def test_ml_is_pure():
    banned = ("app.api", "app.services", "app.db", "fastapi", "starlette", "celery",
              "sqlalchemy", "worker")
    bad = [f"{i.module}:{i.line} imports {i.target}" for i in imports("app/ml")
           if _within(i.target, banned)]
    assert bad == []


def test_api_imports_no_torch_at_module_level():
    bad = [f"{i.module}:{i.line} imports {i.target}" for i in imports("app/api")
           if i.top_level and _within(i.target, ("torch", "torchvision"))]
    assert bad == []


def test_client_imports_nothing_of_the_server():
    bad = [f"{i.module}:{i.line} imports {i.target}" for i in imports("pretrainer_client")
           if _within(i.target, ("app", "worker"))]
    assert bad == []


def test_the_scan_sees_lazy_imports_and_circles(tmp_path):
    # The checks above are only as good as the scan: a function-level import is an edge, and a
    # loop of three is a circle.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("import os\n\n\ndef f():\n    import torch\n")
    found = {(i.target, i.top_level) for i in imports("pkg", tmp_path)}
    assert ("torch", False) in found and ("os", True) in found
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
