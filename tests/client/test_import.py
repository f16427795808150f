"""The client runs where the server is not installed: it loads none of the server's stack."""

from __future__ import annotations

from tests.ml.test_boundaries import loaded_after_import as _loaded

SERVER_STACK = ("torch", "fastapi", "starlette", "sqlalchemy", "celery", "sklearn", "app")


def loaded_after_import(*modules: str) -> list[str]:
    return _loaded(*modules, forbidden=SERVER_STACK)


def test_the_client_and_its_cli_load_no_server_code():
    assert loaded_after_import("pretrainer_client", "pretrainer_client.cli",
                               "pretrainer_client.postman") == []


def test_the_pretrainer_console_script_loads_no_web_db_queue_or_torch():
    # `pretrainer models list` goes through app.cli: it must stay light for a remote service.
    assert set(loaded_after_import("app.cli")) <= {"app"}


def test_the_check_itself_sees_a_server_import():
    assert loaded_after_import("json", "sqlalchemy") == ["sqlalchemy"]
