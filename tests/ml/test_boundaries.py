"""House rules: app.ml loads neither the web stack, nor Celery, nor torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("fastapi", "starlette", "celery", "torch")


def loaded_after_import(*modules: str, forbidden: tuple[str, ...] = FORBIDDEN) -> list[str]:
    """Top-level packages from forbidden that importing modules (in a fresh process) loads."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & {set(forbidden)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_ml_registry_and_unsupervised_family_load_no_web_queue_or_torch():
    assert loaded_after_import("app.ml.registry", "app.ml.unsupervised", "app.ml.artifacts") == []


def test_the_check_itself_sees_a_forbidden_import():
    assert loaded_after_import("json", "celery") == ["celery"]


ML = Path(__file__).resolve().parents[2] / "app" / "ml"


def _imports(path: Path) -> set[str]:
    """Every module a file names in an import statement, at any depth (lazy ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_under_app_ml_imports_the_registry():
    """The catalogue is for callers outside app.ml; a family reaching it would close a loop."""
    found = [str(p.relative_to(ML)) for p in sorted(ML.rglob("*.py"))
             if "app.ml.registry" in _imports(p)]
    assert found == []


def test_app_ml_imports_no_web_queue_database_or_service_code():
    banned = ("fastapi", "starlette", "celery", "sqlalchemy", "app.api", "app.services",
              "app.db", "app.runner", "app.serving")
    found = {str(p.relative_to(ML)): sorted(n for n in _imports(p)
                                             if n.split(".")[0] in banned or n.startswith(banned))
             for p in sorted(ML.rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}
