"""Schemathesis against the service's own /openapi.json: no 5xx, every response as documented.

Runs in-process on the ASGI app (no socket), with a valid API key and a dataset, a finished job
and its model of the caller's project, so that generated calls reach past the 404s too.
See docs/fuzzing.md for what it found.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from app.api.access import Access
from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.runner import run_job
from tests.conftest import blobs, to_csv

KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = int(os.environ.get("PRETRAINER_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    s = Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "d", api_keys=f"fuzz:{KEY}",
                 reaper_seconds=0, orphan_sweep_seconds=0, max_upload_bytes=1 << 20)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    Access(s).seed()
    app = create_app(s)
    with TestClient(app) as c:  # known ids for the fuzzer to find through the examples below
        ds = c.post("/v1/datasets", files={"file": ("b.csv", to_csv(blobs(60)))}, headers=AUTH)
        job = c.post("/v1/jobs", headers=AUTH, json={"dataset_id": ds.json()["id"],
                                                     "algorithm": "kmeans",
                                                     "params": {"n_clusters": 2}}).json()
        run_job(job["id"], settings=s, worker="fuzz")
        model = c.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["model_id"]
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        schema.known_ids = {"dataset_id": ds.json()["id"], "job_id": job["id"], "model_id": model}
        yield schema


@schemathesis.serializer("application/offset+octet-stream")
def _tus_chunk(ctx: object, value: object) -> bytes:
    """A tus PATCH body is raw bytes, like application/octet-stream."""
    return value if isinstance(value, bytes) else str(value).encode()


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# /events streams until its job ends; a generated id never names a running job, but leave out
# the one route that could hold a connection open, so that a run stays bounded.
SKIP = ("GET /v1/jobs/{job_id}/events",)


def _strategy(operation: schemathesis.APIOperation, known: dict[str, str]) -> st.SearchStrategy:
    """Valid and invalid requests, with random ids and with the ids of real resources."""
    names = {p.name for p in operation.iter_parameters() if p.location == "path"}
    ids = {k: v for k, v in known.items() if k in names}
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    options = [operation.as_strategy(generation_mode=mode) for mode in modes]
    if ids:
        options += [operation.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                          path_parameters=ids)]
    return st.one_of(options)


def _fuzz(operation: schemathesis.APIOperation, known: dict[str, str],
          ran: dict[str, list[int]]) -> None:
    @given(case=_strategy(operation, known))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        # The schema declares Bearer auth, so generated cases carry an Authorization header of
        # their own: replace it, or every call would stop at the 401.
        case.headers = {**(case.headers or {}), **AUTH}
        response = case.call_and_validate(checks=CHECKS)
        ran[operation.label].append(response.status_code)

    run()


def test_no_5xx_and_responses_match_the_contract(api_schema):
    ran: dict[str, list[int]] = {}
    operations = [r.ok() for r in api_schema.get_all_operations()]
    # Deletes last: the real dataset and model stay for the other routes to be fuzzed on.
    for operation in sorted(operations, key=lambda o: o.method.upper() == "DELETE"):
        if operation.label in SKIP:
            continue
        ran[operation.label] = []
        _fuzz(operation, api_schema.known_ids, ran)
    if os.environ.get("PRETRAINER_FUZZ_REPORT"):  # the figures of docs/fuzzing.md
        with open(os.environ["PRETRAINER_FUZZ_REPORT"], "w") as fh:
            fh.writelines(f"{label}\t{len(codes)}\t{sorted(Counter(codes).items())}\n"
                          for label, codes in sorted(ran.items()))
    assert len(ran) >= 15
    for label, codes in ran.items():  # every route was reached past authentication
        assert codes and any(code != 401 for code in codes), (label, codes)
    # …and the real resources were found: some calls answered with data, not a 404.
    for label in ("GET /v1/datasets/{dataset_id}/export.csv", "GET /v1/models/{model_id}"):
        assert 200 in ran[label], (label, ran[label])
    assert set(ran["POST /v1/models/{model_id}/predict"]) - {404}


def test_a_body_that_is_not_utf8_is_a_400_naming_the_body(client):
    """Found by the fuzzer: FastAPI's bare "error parsing the body", now a problem that says why."""
    r = client.post("/v1/jobs", content=b"\xb4=\xfb\xc2",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [{"field": "body", "message": "not UTF-8 encoded JSON"}]
    assert "UTF-8" in r.json()["detail"]
