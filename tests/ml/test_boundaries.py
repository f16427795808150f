"""House rules: app.ml loads neither the web stack, nor Celery, nor torch."""

from __future__ import annotations

import json
import subprocess
import sys

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
