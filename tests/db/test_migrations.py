"""Alembic: an empty database upgrades to exactly the tables' schema, and rows written at every
earlier revision survive the upgrade to head and read back through the services.

On SQLite always, and on a fresh PostgreSQL database when one answers (skipped, saying why,
when it does not).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, text

from app.db.migrate import alembic_config, upgrade
from app.db.session import get_engine, get_sessionmaker
from app.db.tables import Base
from app.schemas import DatasetOut, JobOut, ModelOut
from app.services import datasets, idempotency, jobs, models
from tests.integration.conftest import fresh_postgres

REVISIONS = [s.revision for s in reversed(list(
    ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()))]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# A typical row of each table, as far as the columns exist at a revision: a row written at
# revision r gets the values of the columns r has. A later revision that adds a NOT NULL column
# without a server default must add a typical value here (the test says so).
TYPICAL: dict[str, dict[str, Any]] = {
    "datasets": {
        "id": "ds_mig", "project": "default", "name": "blobs", "kind": "tabular", "format": "csv",
        "n_rows": 300, "columns": [{"name": "a", "dtype": "float64", "nulls": 0}],
        "size_bytes": 1234, "sha256": "ab" * 32, "blob_key": "datasets/ds_mig/data.csv",
        "created_at": NOW, "details": {"note": "written before the upgrade"},
    },
    "jobs": {
        "id": "job_mig", "project": "default", "name": "old job", "dataset_id": "ds_mig",
        "algorithm": "kmeans", "family": "unsupervised", "queue": "cpu",
        "params": {"n_clusters": 3}, "features": ["a"], "target": None, "status": "succeeded",
        "progress": 1.0, "metrics": {"inertia": 1.5}, "history": [], "error_type": None,
        "error_message": None, "model_id": "mdl_mig", "cancel_requested": False, "attempts": 1,
        "worker": "host:1", "lease_epoch": 1, "heartbeat_at": NOW, "created_at": NOW,
        "started_at": NOW, "finished_at": NOW,
    },
    "models": {
        "id": "mdl_mig", "project": "default", "name": None, "algorithm": "kmeans",
        "family": "unsupervised", "job_id": "job_mig", "dataset_id": "ds_mig",
        "params": {"n_clusters": 3}, "input_schema": {"kind": "tabular", "features": []},
        "capabilities": ["predict", "embed"], "metrics": {"inertia": 1.5},
        "artifact_key": "models/mdl_mig", "created_at": NOW, "backbone_model_id": None,
        "lineage": {"pretrained_on": "ds_mig"},
    },
    "idempotency_keys": {
        "project": "default", "route": "jobs", "key": "retry-1", "fingerprint": "cd" * 32,
        "resource_id": "job_mig", "created_at": NOW,
    },
    "project_quotas": {
        "project": "default", "stored_bytes": None, "datasets": 50, "models": None,
        "running_jobs": 2, "queued_jobs": None, "serving_requests": None, "updated_at": NOW,
    },
}


def _sqlite(tmp_path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"


def _postgres() -> Iterator[str]:
    yield from fresh_postgres("pretrainer_mig")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path) -> Iterator[str]:
    """An empty database on each backend."""
    yield from (_sqlite(tmp_path) if request.param == "sqlite" else _postgres())


def test_upgrade_from_empty_matches_the_tables(empty_db: str):
    upgrade(empty_db)
    engine = create_engine(empty_db)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert diffs == [], f"migrations and app/db/tables.py disagree: {diffs}"
    assert version == REVISIONS[-1]


def _insert_typical(url: str, revision: str) -> dict[str, set[str]]:
    """Insert TYPICAL rows with the columns this revision has; return {table: its columns}."""
    engine = create_engine(url)
    written = {}
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for name, values in TYPICAL.items():
                if name not in meta.tables:
                    continue
                table = meta.tables[name]
                required = {c.name for c in table.columns
                            if not c.nullable and c.server_default is None}
                missing = required - set(values)
                assert not missing, (f"revision {revision} added required {name}.{missing}: "
                                     "give it a typical value in TYPICAL")
                conn.execute(table.insert().values(
                    {k: v for k, v in values.items() if k in table.columns}))
                written[name] = set(table.columns.keys())
    finally:
        engine.dispose()
    return written


@pytest.mark.parametrize("revision", REVISIONS[:-1] or ["none"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rows_of_every_revision_survive_the_upgrade_to_head(backend: str, revision: str, tmp_path):
    if revision == "none":
        pytest.skip("a single revision: nothing to upgrade from")
    for url in (_sqlite(tmp_path) if backend == "sqlite" else _postgres()):
        upgrade(url, revision)
        had = _insert_typical(url, revision)
        assert {"datasets", "jobs", "models"} <= set(had)
        upgrade(url)
        with get_sessionmaker(url)() as s:
            ds_row = datasets.get(session=s, project="default", dataset_id="ds_mig")
            ds = DatasetOut.from_row(ds_row)
            job = JobOut.from_row(jobs.get(session=s, project="default", job_id="job_mig"))
            model_row = models.get(session=s, project="default", model_id="mdl_mig")
            model = ModelOut.from_row(model_row)
            key = (idempotency.find(session=s, project="default", route="jobs", key="retry-1",
                                    fingerprint=None) if "idempotency_keys" in had else None)
        get_engine.cache_clear()
        get_sessionmaker.cache_clear()
        assert ds.name == "blobs" and ds.columns[0].name == "a" and ds.n_rows == 300
        assert ds.created_at == NOW
        assert job.status == "succeeded" and job.params == {"n_clusters": 3}
        assert job.metrics == {"inertia": 1.5} and job.finished_at == NOW
        assert model.capabilities == ["predict", "embed"] and model.job_id == "job_mig"
        if "idempotency_keys" in had:
            assert key == "job_mig"
        # Columns a later revision added read as their defaults on old rows, else as written.
        assert ds_row.details == (TYPICAL["datasets"]["details"]
                                  if "details" in had["datasets"] else {})
        assert model_row.lineage == (TYPICAL["models"]["lineage"]
                                     if "lineage" in had["models"] else {})
