"""Registrations of one name at the same instant each get their own version number, and two
moves of one alias at once leave a history where each move starts where another ended: on
SQLite and on a fresh PostgreSQL database (skipped, saying why, when none answers)."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from app.db.migrate import upgrade
from app.db.session import get_sessionmaker, session_scope
from app.db.tables import Model
from app.services import registry
from tests.integration.conftest import fresh_postgres

CALLERS = 8
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Iterator[str]:
    """A migrated database holding one model, mdl_a, of project p."""
    urls = ([f"sqlite:///{tmp_path / 'reg.db'}"] if request.param == "sqlite"
            else fresh_postgres("pretrainer_reg"))
    for url in urls:
        upgrade(url)
        with session_scope(url) as s:
            s.add(Model(id="mdl_a", project="p", algorithm="kmeans", family="unsupervised",
                        job_id="job_a", dataset_id="ds_a", params={}, input_schema={},
                        capabilities=["predict"], metrics={}, artifact_key="models/mdl_a"))
        yield url


def _at_once(n: int, call: Callable[[int], T]) -> list[T]:
    """call(i) for i < n in n threads released together; their results (re-raising)."""
    start = threading.Barrier(n)

    def run(i: int) -> T:
        start.wait(timeout=60)
        return call(i)
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=120) for f in futures]


def test_simultaneous_registrations_get_distinct_versions(db: str):
    name = f"n{uuid.uuid4().hex[:6]}"

    def register(i: int) -> int:
        with session_scope(db) as s:
            return registry.register(session=s, project="p", name=name, model_ref="mdl_a",
                                     by=f"key_{i}").version
    versions = _at_once(CALLERS, register)
    assert sorted(versions) == list(range(1, CALLERS + 1)), versions
    with get_sessionmaker(db)() as s:
        entry = registry.show(session=s, project="p", name=name)
    assert [v.version for v in entry.versions] == list(range(1, CALLERS + 1))


def test_simultaneous_alias_moves_chain_in_the_history(db: str):
    with session_scope(db) as s:
        for _ in range(CALLERS):
            registry.register(session=s, project="p", name="m", model_ref="mdl_a", by="k")

    def move(i: int) -> int:
        with session_scope(db) as s:
            return registry.set_alias(session=s, project="p", name="m", alias="production",
                                      version=i + 1, by=f"key_{i}").version
    _at_once(CALLERS, move)
    with get_sessionmaker(db)() as s:
        entry = registry.show(session=s, project="p", name="m")
    moves = [(m.from_version, m.to_version) for m in entry.moves]
    assert moves[0][0] is None and len(moves) == CALLERS
    assert all(a[1] == b[0] for a, b in itertools.pairwise(moves)), moves
    assert entry.aliases[0].version == moves[-1][1]
