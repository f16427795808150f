"""The OpenAPI document: every operation has examples, and they are true to the schemas."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from app import schemas

# binary bodies: described, not exemplified
NO_EXAMPLE_MEDIA = ("image/png", "application/x-npy", "application/vnd.apache.arrow.stream",
                    "application/zip", "application/vnd.apache.parquet")


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, ops in doc["paths"].items()
            for method, op in ops.items()]


@pytest.fixture
def doc(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_every_operation_has_request_and_response_examples(doc):
    missing = []
    for method, path, op in operations(doc):
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            if media == "application/json" and "example" not in content:
                missing.append(f"{method} {path} request {media}")
        for status, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                if media not in NO_EXAMPLE_MEDIA and "example" not in content:
                    missing.append(f"{method} {path} {status} {media}")
        has_any = any("example" in c for r in op["responses"].values()
                      for c in r.get("content", {}).values())
        if not has_any:
            missing.append(f"{method} {path}: no example at all")
    assert len(operations(doc)) >= 20
    assert missing == []


def test_errors_are_documented_as_problem_json(doc):
    for method, path, op in operations(doc):
        for status, response in op["responses"].items():
            if status.startswith("4"):
                content = response["content"]
                assert list(content) == ["application/problem+json"], (method, path, status)
                example = content["application/problem+json"]["example"]
                assert example["status"] == int(status)
                assert {"type", "title", "detail"} <= set(example)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def _model(ref: str) -> type[BaseModel]:
    return getattr(schemas, ref.rsplit("/", 1)[1])


def test_examples_validate_against_their_models(doc):
    checked = 0
    for method, path, op in operations(doc):
        bodies = [(op.get("requestBody", {}).get("content", {}).get("application/json"), "req")]
        bodies += [(r.get("content", {}).get("application/json"), status)
                   for status, r in op["responses"].items()]
        for content, where in bodies:
            if not content or "$ref" not in content.get("schema", {}):
                continue
            _model(content["schema"]["$ref"]).model_validate(content["example"])
            checked += 1
    assert checked >= 18


def test_the_documented_problem_is_what_the_api_sends(client, doc):
    r = client.post("/v1/jobs", json={"dataset_id": "ds_x", "algorithm": "kmeans", "params": 3})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    required = doc["components"]["schemas"]["Problem"]["required"]
    assert set(required) <= set(r.json())
