"""The client runs where the server is not installed: it loads none of the server's stack."""

from __future__ import annotations

import subprocess
import sys

from tests.ml.test_boundaries import loaded_after_import as _loaded

SERVER_STACK = ("torch", "fastapi", "starlette", "sqlalchemy", "celery", "sklearn", "app")


def loaded_after_import(*modules: str) -> list[str]:
    return _loaded(*modules, forbidden=SERVER_STACK)


def test_the_client_and_its_cli_load_no_server_code():
    assert loaded_after_import("pretrainer_client", "pretrainer_client.cli") == []


# Every client module, imported where the server's packages cannot be: a finder first on
# sys.meta_path refuses them, as on a laptop with only the client installed.
WITHOUT_SERVER = """
import importlib, pkgutil, sys
from importlib.abc import MetaPathFinder

ABSENT = {"app", "worker", "fastapi", "starlette", "sqlalchemy", "celery", "torch"}

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
import pretrainer_client
names = [m.name for m in pkgutil.walk_packages(pretrainer_client.__path__, "pretrainer_client.")
         if not m.name.endswith(".__main__")]  # runs the CLI; it imports only .cli
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_every_client_module_imports_with_the_server_packages_absent():
    out = subprocess.run([sys.executable, "-c", WITHOUT_SERVER], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) >= 8  # the check saw the modules, not an empty package


def test_the_absent_server_check_itself_refuses_a_server_import():
    code = WITHOUT_SERVER.replace("import pretrainer_client\n",
                                  "import pretrainer_client\nimport app.config\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode != 0 and "No module named 'app'" in out.stderr


def test_the_pretrainer_console_script_loads_no_web_db_queue_or_torch():
    # `pretrainer models list` goes through app.cli: it must stay light for a remote service.
    assert set(loaded_after_import("app.cli")) <= {"app"}


def test_the_check_itself_sees_a_server_import():
    assert loaded_after_import("json", "sqlalchemy") == ["sqlalchemy"]
