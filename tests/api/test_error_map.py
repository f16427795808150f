"""Domain errors that rise out of a route become the problems of app/api/errors.py's one map."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api import errors
from app.data.features import FeatureError
from app.data.formats import IngestError
from app.data.images import ImageError
from app.errors import Conflict, Invalid, NotFound, field_error
from app.ml.artifacts import UnsafeArtifact
from app.ml.base import CapabilityError, InputError
from app.plots import NoPlot
from app.storage import StoreOwned

CASES = [
    (IngestError("row 3 is ragged"), 422, "file", "row 3 is ragged"),
    (IngestError("over the limit", kind="too_large"), 413, "file", "over the limit"),
    (IngestError("not a format we read", kind="unsupported"), 415, "file", "not a format we read"),
    (FeatureError('unknown column "x"', column="x"), 422, "features", 'unknown column "x"'),
    (ImageError("too many members", kind="too_large"), 413, "instances", "too many members"),
    (InputError("expected 4 values"), 422, "instances", "expected 4 values"),
    (CapabilityError("t-SNE cannot embed new points"), 422, "model", "t-SNE cannot"),
    (NoPlot("no epochs recorded"), 409, "kind", "no epochs recorded"),
    (StoreOwned("the store belongs to db_a"), 503, "store", "db_a"),
]


def _client(exc: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/models/{model_id}")
    def _raise(model_id: str) -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(("exc", "status", "field", "words"), CASES,
                         ids=[type(c[0]).__name__ + str(c[1]) for c in CASES])
def test_a_domain_error_becomes_its_problem(exc, status, field, words):
    r = _client(exc).get("/models/m_1")
    body = r.json()
    assert r.status_code == status and body["status"] == status
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in body["detail"]
    assert body["errors"] == [{"field": field, "message": body["detail"]}]


def test_an_unsafe_artifact_names_the_model_and_keeps_the_reason_in_the_log():
    r = _client(UnsafeArtifact("pickle of os.system")).get("/models/m_7")
    body = r.json()
    assert r.status_code == 500 and body["title"] == "Model artifact refused"
    assert "m_7" in body["detail"] and "os.system" not in body["detail"]


def test_every_mapped_class_is_registered():
    app = FastAPI()
    errors.install(app)
    assert set(errors.DOMAIN_ERRORS) <= set(app.exception_handlers)


def test_field_error_is_the_problem_class_of_its_status():
    assert isinstance(field_error("name", "unknown", status=404), NotFound)
    conflict = field_error("upload_id", "being written", status=409, detail="another PATCH…")
    assert isinstance(conflict, Conflict) and conflict.status == 409
    assert conflict.detail == "another PATCH…"
    assert conflict.errors == [{"field": "upload_id", "message": "being written"}]
    plain = field_error("target", "unknown column")
    assert isinstance(plain, Invalid) and plain.detail == "target: unknown column"
    assert field_error("body", "unreadable", status=400).title == "Bad request"
