"""The client runs where the server is not installed: it loads none of the server's stack."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_STACK = ("torch", "fastapi", "starlette", "sqlalchemy", "celery", "sklearn", "app")


def loaded_after_import(*modules: str) -> list[str]:
    """Top-level packages of SERVER_STACK that importing modules (in a fresh process) loads."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & {set(SERVER_STACK)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_client_and_its_cli_load_no_server_code():
    assert loaded_after_import("pretrainer_client", "pretrainer_client.cli",
                               "pretrainer_client.postman") == []


def test_the_pretrainer_console_script_loads_no_web_db_queue_or_torch():
    # `pretrainer models list` goes through app.cli: it must stay light for a remote service.
    assert set(loaded_after_import("app.cli")) <= {"app"}


def test_the_check_itself_sees_a_server_import():
    assert loaded_after_import("json", "sqlalchemy") == ["sqlalchemy"]
